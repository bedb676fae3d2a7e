package server

import (
	"io"
	"net"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/socket/proto"
)

// Admission: the connection caps (overall and per uid, with slots kept
// for root and tokend), refusing when they are reached without slowing
// the accept loop, and the deadlines that close idle connections.

// admit takes a slot for c, a connection of uid, or says why there is none.
func (s *Server) admit(c net.Conn, uid uint32) string {
	exempt := s.exempt(uid)
	limit := s.maxConns.Load()
	if exempt {
		limit += reservedSlots
	}
	if s.active.Add(1) > limit {
		s.active.Add(-1)
		return "too many connections"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !exempt && int64(s.byUID[uid]) >= s.maxPerUID.Load() {
		s.active.Add(-1)
		return "too many connections from this uid"
	}
	s.byUID[uid]++
	s.conns[c] = struct{}{}
	return ""
}

// release gives back the slot admit took.
func (s *Server) release(c net.Conn, uid uint32) {
	s.mu.Lock()
	if s.byUID[uid]--; s.byUID[uid] <= 0 {
		delete(s.byUID, uid)
	}
	delete(s.conns, c)
	s.mu.Unlock()
	s.active.Add(-1)
}

// refuseBusy answers a connection that got no slot with ERR busy, if it
// asks something: a connect-and-read client (LoadCredential=) gets nothing,
// since the text would become its credential. Each refusal lingers up to a
// second to tell the two apart; past a bound, a flood is only glanced at
// (by a few goroutines, never the accept loop) and closed, rather than
// piling up goroutines.
func (s *Server) refuseBusy(c net.Conn, peer Peer, why string) {
	s.warnings.Warn(s.Log, "connections refused: "+why, peer.UID, func(e *zerolog.Event) *zerolog.Event {
		return e.Int64("max_connections", s.maxConns.Load()).Int64("max_connections_per_uid", s.maxPerUID.Load())
	})
	line := (&proto.Error{Code: proto.CodeBusy, Msg: why + ", try again"}).Line()
	limit := s.maxLingering
	if limit <= 0 {
		limit = 1024
	}
	if s.lingering.Add(1) > limit {
		s.lingering.Add(-1)
		// Never in the accept loop: a few glancers take it, and when they
		// are behind it is closed at once. Accepting must not slow down,
		// or the listen backlog fills and nobody can connect at all.
		select {
		case s.glances <- refusal{c, line}:
		default:
			c.Close()
			s.count(VerbOther, proto.CodeBusy)
		}
		return
	}
	go func() {
		defer s.lingering.Add(-1)
		s.countBusy(refuseAsked(c, line, time.Second))
	}()
}

// refusal is a refused connection past the linger bound, and its line.
type refusal struct {
	c    net.Conn
	line string
}

// glancers look at refused connections past the linger bound, up to 10 ms
// each, from a queue of glanceQueue.
const (
	glancers    = 4
	glanceQueue = 256
)

func (s *Server) countBusy(asked bool) {
	if asked {
		s.count(VerbOther, proto.CodeBusy)
	} else {
		s.count(VerbBare, proto.CodeBusy)
	}
}

// refuseAsked waits up to wait for the client's first bytes: a request
// gets line; an EOF (connect-and-read) or silence gets nothing. Then it
// closes the connection and says whether the client asked.
func refuseAsked(c net.Conn, line string, wait time.Duration) (asked bool) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	if n, _ := c.Read(b[:]); n == 0 {
		return false
	}
	refuse(c, line)
	return true
}

// wakeIdle ends the reads of connections waiting for their next request;
// a handler busy answering still writes its answer.
func (s *Server) wakeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.SetReadDeadline(time.Now())
	}
}

// deadline keeps a connection's read or write deadline between timeout
// and timeout+timeout/16 ahead of every call to due. Setting it at every
// request costs a timer update each time; this moves it once per
// sixteenth of the timeout, and never closes a connection early.
type deadline struct {
	c       *net.UnixConn
	write   bool
	timeout time.Duration
	by      time.Time
}

func (d *deadline) due() {
	now := time.Now()
	if d.by.Sub(now) < d.timeout {
		d.by = now.Add(d.timeout + d.timeout/16)
		if d.write {
			d.c.SetWriteDeadline(d.by)
		} else {
			d.c.SetReadDeadline(d.by)
		}
	}
}

// deadlineWriter keeps the write deadline ahead of every write, bufio's
// implicit flushes included: a client that pipelines requests and never
// reads its answers is closed after the timeout, not held forever.
type deadlineWriter struct{ d *deadline }

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.d.due()
	return w.d.c.Write(p)
}

// refuse writes a last error line and closes. It keeps the connection
// open for up to a second first, reading away what the client sends: a
// client whose request arrives after the close gets EPIPE on its write
// (or a reset, with its request unread) and may never read the answer.
func refuse(c net.Conn, line string) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}
