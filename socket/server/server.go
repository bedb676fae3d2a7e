package server

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/socket/proto"
)

// Server answers the protocol on a listener. Set the fields before Serve.
type Server struct {
	Tokens      Tokens
	Meter       Meter // nil counts nothing
	Log         zerolog.Logger
	IdleTimeout time.Duration // per request line, and per write; default 30s
	// FirstTokenWait is how long a connect-and-read client (LoadCredential=)
	// waits for a first token; default 30s. Requests wait requestWait.
	FirstTokenWait time.Duration

	maxConns     atomic.Int64
	maxPerUID    atomic.Int64
	exempt       func(uid uint32) bool // root and the server's own uid, unless a test says otherwise
	active       atomic.Int64
	warnings     limitedLog
	lingering    atomic.Int64 // refused connections not yet closed
	maxLingering int64        // bound on lingering; default 1024

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	byUID map[uint32]int // open connections per uid
}

// requestWait is how long a request waits for a first token on its way.
const requestWait = 5 * time.Second

// reservedSlots are kept, past max_connections, for root (systemd's
// LoadCredential= connects as root) and the server's own uid (the
// watchdog's health check): a flood by other users leaves them served.
const reservedSlots = 64

// Active is the number of open client connections.
func (s *Server) Active() int64 { return s.active.Load() }

// count tells the Meter about one answer.
func (s *Server) count(verb proto.Verb, code string) {
	if s.Meter != nil {
		s.Meter.Request(verb, code)
	}
}

// SetMaxConns sets how many connections are served at once (default 1024);
// it may be called while serving.
func (s *Server) SetMaxConns(n int) { s.maxConns.Store(int64(n)) }

// SetMaxPerUID sets how many of them one uid may hold (default 64); root
// and the server's own uid are exempt. It may be called while serving.
func (s *Server) SetMaxPerUID(n int) { s.maxPerUID.Store(int64(n)) }

// Serve accepts connections until ctx ends, then stops accepting, lets
// answers in flight finish, closes idle connections and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 30 * time.Second
	}
	if s.FirstTokenWait <= 0 {
		s.FirstTokenWait = 30 * time.Second
	}
	if s.maxConns.Load() <= 0 {
		s.maxConns.Store(1024)
	}
	if s.maxPerUID.Load() <= 0 {
		s.maxPerUID.Store(64)
	}
	if s.exempt == nil {
		self := uint32(os.Geteuid())
		s.exempt = func(uid uint32) bool { return uid == 0 || uid == self }
	}
	s.mu.Lock()
	s.conns = make(map[net.Conn]struct{})
	s.byUID = make(map[uint32]int)
	s.mu.Unlock()

	stop, closed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(closed)
		select {
		case <-ctx.Done():
		case <-stop:
		}
		ln.Close() // and removes the socket file: done before Serve returns
		s.wakeIdle()
	}()
	defer func() { close(stop); <-closed }()

	var wg sync.WaitGroup
	defer wg.Wait()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors and the like: back off and keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.Log.Warn().Err(err).Dur("retry_in", delay.Round(time.Millisecond)).Msg("accept failed")
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		uc, ok := c.(*net.UnixConn)
		if !ok {
			s.Log.Error().Str("network", c.RemoteAddr().Network()).Msg("not a Unix connection; dropped")
			c.Close()
			continue
		}
		// Who it is decides which limits apply; unreadable means dropped
		// (fail closed).
		peer, err := peerOf(uc)
		if err != nil {
			s.Log.Warn().Err(err).Msg("connection dropped: peer credentials unreadable")
			c.Close()
			continue
		}
		if why := s.admit(c, peer.UID); why != "" {
			s.refuseBusy(c, peer, why)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.release(c, peer.UID)
			defer c.Close()
			defer func() {
				if r := recover(); r != nil {
					s.Log.Error().Interface("panic", r).Msg("connection handler panicked; connection dropped")
				}
			}()
			s.handle(ctx, uc, peer)
		}()
	}
}

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
// and closed, rather than piling up goroutines.
func (s *Server) refuseBusy(c net.Conn, peer Peer, why string) {
	s.warnings.warn(s.Log, "connections refused: "+why, peer.UID, func(e *zerolog.Event) *zerolog.Event {
		return e.Int64("max_connections", s.maxConns.Load()).Int64("max_connections_per_uid", s.maxPerUID.Load())
	})
	line := (&proto.Error{Code: proto.CodeBusy, Msg: why + ", try again"}).Line()
	limit := s.maxLingering
	if limit <= 0 {
		limit = 1024
	}
	if s.lingering.Add(1) > limit {
		s.lingering.Add(-1)
		s.countBusy(refuseAsked(c, line, 10*time.Millisecond))
		return
	}
	go func() {
		defer s.lingering.Add(-1)
		s.countBusy(refuseAsked(c, line, time.Second))
	}()
}

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

// Buffers are reused across connections: a connection per request is the
// common case for shell clients and LoadCredential=.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, proto.MaxLine+2) }} // the longest line and its CRLF
	writers = sync.Pool{New: func() any { return bufio.NewWriter(nil) }}
)

// conn is one client connection.
type conn struct {
	s               *Server
	c               *net.UnixConn
	peer            Peer
	name            string // the token name last asked for, so asking again allocates nothing
	readBy, writeBy deadline
	dw              deadlineWriter
}

// log is the connection's logger. It is built when something is logged,
// not for every connection.
func (cn *conn) log() *zerolog.Logger {
	p := cn.peer
	l := cn.s.Log.With().Uint32("uid", p.UID).Uint32("gid", p.GID).Int32("pid", p.PID).Logger()
	return &l
}

func (s *Server) handle(ctx context.Context, c *net.UnixConn, peer Peer) {
	cn := &conn{s: s, c: c, peer: peer,
		readBy: deadline{c: c, timeout: s.IdleTimeout}, writeBy: deadline{c: c, write: true, timeout: s.IdleTimeout}}
	cn.dw.d = &cn.writeBy
	r, w := readers.Get().(*bufio.Reader), writers.Get().(*bufio.Writer)
	r.Reset(c)
	w.Reset(&cn.dw)
	defer func() {
		r.Reset(nil)
		w.Reset(nil)
		readers.Put(r)
		writers.Put(w)
	}()
	for first := true; ; first = false {
		cn.readBy.due()
		// Checked after setting the deadline: a shutdown that woke idle
		// readers just before must not be undone by it.
		if ctx.Err() != nil {
			return
		}
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(bytes.TrimRight(line, "\r\n")) > proto.MaxLine {
			cn.log().Warn().Msg("request line too long; connection closed")
			s.count(VerbOther, proto.CodeTooLong)
			if w.Flush() == nil {
				refuse(c, (&proto.Error{Code: proto.CodeTooLong, Msg: fmt.Sprintf("request line longer than %d bytes", proto.MaxLine)}).Line())
			}
			return
		}
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			return // idle timeout, reset, or shutting down
		}
		if eof && len(line) == 0 {
			if first {
				cn.serveBare(ctx)
			}
			return
		}
		if cn.answer(ctx, w, r, bytes.TrimSuffix(line, []byte("\n"))) {
			return // the answer was a watch, which ends the connection
		}
		// A failed write (bufio flushes by itself when full) is sticky:
		// WriteByte reports it.
		if w.WriteByte('\n') != nil {
			return
		}
		// Pipelined requests already in the buffer get their answers in one write.
		if r.Buffered() == 0 || eof {
			if w.Flush() != nil {
				return
			}
		}
		if eof {
			return // a last request without a newline, then EOF
		}
	}
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

// answer writes the response line to one request line, without its
// newline. TOKEN and HEADER on a kept-alive connection allocate nothing.
// It reports whether it served a watch instead, which ends the connection.
func (cn *conn) answer(ctx context.Context, w *bufio.Writer, r *bufio.Reader, line []byte) (watched bool) {
	req, perr := proto.ParseReusing(line, &cn.name)
	if perr != nil {
		cn.log().Debug().Str("code", perr.Code).Msg("bad request")
		cn.s.count(cmp.Or(req.Verb, VerbOther), perr.Code)
		w.WriteString(perr.Line())
		return false
	}
	if req.Verb == proto.VerbWatch {
		cn.watch(ctx, w, r, req.Name)
		return true
	}
	if perr = cn.answerTo(ctx, w, req); perr != nil {
		cn.s.count(req.Verb, perr.Code)
		w.WriteString(perr.Line())
		return false
	}
	cn.s.count(req.Verb, "ok")
	return false
}

// answerTo writes the OK answer to req, or returns the error to answer.
func (cn *conn) answerTo(ctx context.Context, w *bufio.Writer, req proto.Request) *proto.Error {
	switch req.Verb {
	case proto.VerbPing:
		w.WriteString("OK PONG")
		return nil
	case proto.VerbList:
		w.WriteString("OK")
		for _, n := range cn.s.Tokens.Names(cn.peer) {
			w.WriteByte(' ')
			w.WriteString(n)
		}
		return nil
	case proto.VerbStatus:
		st, err := cn.s.Tokens.Status(req.Name, cn.peer)
		if err != nil {
			return cn.failed(req.Name, err)
		}
		w.WriteString("OK ")
		w.WriteString(st.String())
		return nil
	case proto.VerbMetrics:
		text, err := cn.s.Tokens.Metrics(cn.peer)
		if err != nil {
			return cn.failed("", err)
		}
		if len(text) == 0 || text[len(text)-1] != '\n' {
			text = append(text, '\n')
		}
		// "OK <n>", then exactly n bytes of text. Its last byte is the
		// newline the caller writes after every answer.
		fmt.Fprintf(w, "OK %d\n", len(text))
		w.Write(text[:len(text)-1])
		return nil
	}
	t, err := cn.token(ctx, Query{Name: req.Name, Min: time.Duration(req.Min) * time.Second, Wait: requestWait})
	if err != nil {
		return err
	}
	w.WriteString("OK ")
	switch req.Verb {
	case proto.VerbJSON:
		w.Write(t.JSON(time.Now()))
	case proto.VerbHeader:
		w.WriteString(t.Type)
		w.WriteByte(' ')
		w.WriteString(t.Value)
	case proto.VerbInfo:
		w.WriteString(t.Info(time.Now()))
	default:
		w.WriteString(t.Value)
	}
	return nil
}

// token asks Tokens and turns any failure into a protocol error.
func (cn *conn) token(ctx context.Context, q Query) (Token, *proto.Error) {
	t, err := cn.s.Tokens.Token(ctx, q, cn.peer)
	if err != nil {
		return Token{}, cn.failed(q.Name, err)
	}
	return t, nil
}

// failed turns a failure from Tokens into a protocol error, and logs it.
func (cn *conn) failed(name string, err error) *proto.Error {
	var perr *proto.Error
	if !errors.As(err, &perr) {
		perr = &proto.Error{Code: proto.CodeUnavailable, Msg: err.Error()}
	}
	var named *NamedError
	if errors.As(err, &named) {
		name = named.Name
	}
	peer := cn.peer
	if perr.Code == proto.CodeDenied {
		cn.s.warnings.warn(cn.s.Log, "peer denied", peer.UID, func(e *zerolog.Event) *zerolog.Event {
			return e.Uint32("gid", peer.GID).Int32("pid", peer.PID).Str("token", name).Str("addr", peer.Addr)
		})
	} else {
		cn.log().Debug().Str("token", name).Str("code", perr.Code).Msg("request failed")
	}
	return perr
}

// watch serves WATCH: the token now and at every change, ERR unavailable
// while there is none, until the client closes (or sends anything: WATCH
// is a connection's last request), the token or the peer's access to it
// goes away in a reload (a last ERR line), or the server stops. There is
// no idle timeout while watching.
func (cn *conn) watch(ctx context.Context, w *bufio.Writer, r *bufio.Reader, name string) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cn.c.SetReadDeadline(time.Time{})
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		// Ends on the client's EOF or data, or when the connection is
		// woken (shutdown, or below) under it.
		r.ReadByte()
		cancel()
	}()
	defer func() {
		// The reader goes back to the pool after this returns: stop
		// using it first.
		cn.c.SetReadDeadline(time.Now())
		<-closed
	}()
	counted, writeFailed := false, false
	send := func(t Token, err error) error {
		if !counted {
			counted = true
			cn.s.count(proto.VerbWatch, "ok")
		}
		if err != nil {
			w.WriteString(cn.failed(name, err).Line())
		} else {
			w.WriteString("OK ")
			w.WriteString(t.Value)
		}
		w.WriteByte('\n')
		if err := w.Flush(); err != nil {
			writeFailed = true
			return err
		}
		return nil
	}
	err := cn.s.Tokens.Watch(ctx, Query{Name: name}, cn.peer, send)
	if err == nil || writeFailed || ctx.Err() != nil {
		return
	}
	perr := cn.failed(name, err)
	if !counted {
		cn.s.count(proto.VerbWatch, perr.Code)
	}
	w.WriteString(perr.Line())
	w.WriteByte('\n')
	w.Flush()
}

// serveBare answers a client that sent nothing and closed its side: the bare
// token and EOF. A LoadCredential= peer selects the token by credential id.
// On failure it writes nothing, since an error text would become the
// credential, and says so loudly in the log instead.
func (cn *conn) serveBare(ctx context.Context) {
	peer := cn.peer
	name := ""
	unit, id, isCred := peer.Credential()
	if isCred && proto.ValidName(id) {
		name = id
	}
	t, perr := cn.token(ctx, Query{Name: name, Wait: cn.s.FirstTokenWait})
	if perr != nil && perr.Code == proto.CodeUnknown && name != "" {
		name = ""
		t, perr = cn.token(ctx, Query{Wait: cn.s.FirstTokenWait})
	}
	if perr != nil {
		cn.s.count(VerbBare, perr.Code)
		cn.s.warnings.warn(cn.s.Log, "connect-and-read client gets nothing", peer.UID, func(e *zerolog.Event) *zerolog.Event {
			e = e.Uint32("gid", peer.GID).Int32("pid", peer.PID).Str("token", name).Str("code", perr.Code).Str("reason", proto.Clean(perr.Msg))
			if isCred {
				e = e.Str("claimed_unit", unit).Str("credential", id)
			}
			return e
		})
		return
	}
	if isCred {
		// Claimed: anyone can bind an address of that form.
		cn.log().Info().Str("claimed_unit", unit).Str("credential", id).Str("token", t.Name).Msg("token served to LoadCredential=")
	}
	cn.s.count(VerbBare, "ok")
	cn.c.SetWriteDeadline(time.Now().Add(cn.s.IdleTimeout))
	io.WriteString(cn.c, t.Value)
}
