package socket

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Token is what the server hands out. The server never logs Value.
type Token struct {
	Name      string
	Type      string // e.g. "Bearer"
	Value     string
	Scope     string
	ExpiresAt time.Time // carries a monotonic reading when set from time.Now
	FetchedAt time.Time
}

// Tokens is what the server needs from whoever keeps the tokens.
type Tokens interface {
	// Token returns the token called name ("" for the default) if peer may
	// read it. Errors should be *Error with code denied, unknown-token or
	// unavailable; anything else is answered as unavailable. It may wait
	// while ctx allows, e.g. for a first token that is on its way.
	Token(ctx context.Context, name string, peer Peer) (Token, error)
	// Names lists the tokens peer may read.
	Names(peer Peer) []string
}

// Server answers the protocol on a listener. Set the fields before Serve.
type Server struct {
	Tokens      Tokens
	Log         zerolog.Logger
	IdleTimeout time.Duration // per request line; default 30s

	maxConns     atomic.Int64
	active       atomic.Int64
	busy         refusals
	lingering    atomic.Int64 // refused connections not yet closed
	maxLingering int64        // bound on lingering; default 1024

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// SetMaxConns sets how many connections are served at once (default 1024);
// it may be called while serving.
func (s *Server) SetMaxConns(n int) { s.maxConns.Store(int64(n)) }

// Serve accepts connections until ctx ends, then stops accepting, lets
// answers in flight finish, closes idle connections and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 30 * time.Second
	}
	if s.maxConns.Load() <= 0 {
		s.maxConns.Store(1024)
	}
	s.mu.Lock()
	s.conns = make(map[net.Conn]struct{})
	s.mu.Unlock()

	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		ln.Close()
		s.wakeIdle()
	}()
	defer close(stop)

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
			s.Log.Warn().Err(err).Dur("retry_in", delay).Msg("accept failed")
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		if s.active.Add(1) > s.maxConns.Load() {
			s.active.Add(-1)
			s.refuseBusy(c)
			continue
		}
		s.track(c, true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.active.Add(-1)
			defer s.track(c, false)
			defer c.Close()
			defer func() {
				if r := recover(); r != nil {
					s.Log.Error().Interface("panic", r).Msg("connection handler panicked; connection dropped")
				}
			}()
			s.handle(ctx, c)
		}()
	}
}

// refuseBusy answers a connection over max_connections with ERR busy.
// Each refusal lingers up to a second (see refuse); past a bound, a flood
// gets the line and an immediate close instead of a pile of goroutines (a
// client that writes after that close may see EPIPE).
func (s *Server) refuseBusy(c net.Conn) {
	s.busy.note(s.Log, s.maxConns.Load())
	line := (&Error{Code: CodeBusy, Msg: "too many connections, try again"}).Line()
	limit := s.maxLingering
	if limit <= 0 {
		limit = 1024
	}
	if s.lingering.Add(1) > limit {
		s.lingering.Add(-1)
		c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		io.WriteString(c, line+"\n")
		c.Close()
		return
	}
	go func() {
		defer s.lingering.Add(-1)
		refuse(c, line)
	}()
}

// refusals logs connections refused as busy at most once per interval,
// with how many there were: a flood of clients must not flood the log too.
type refusals struct {
	interval time.Duration // default 10s

	mu      sync.Mutex
	last    time.Time
	pending int
	max     int64
	flush   *time.Timer
}

// note counts one refusal. The first after a quiet interval is logged at
// once; later ones are summed into one line at the interval's end.
func (r *refusals) note(log zerolog.Logger, max int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.interval <= 0 {
		r.interval = 10 * time.Second
	}
	r.pending++
	r.max = max
	if wait := r.interval - time.Since(r.last); wait > 0 {
		if r.flush == nil {
			r.flush = time.AfterFunc(wait, func() {
				r.mu.Lock()
				defer r.mu.Unlock()
				r.flush = nil
				r.report(log)
			})
		}
		return
	}
	r.report(log)
}

// report logs the refusals counted so far; r.mu is held.
func (r *refusals) report(log zerolog.Logger) {
	if r.pending == 0 {
		return
	}
	log.Warn().Int64("max_connections", r.max).Int("refused", r.pending).Msg("connections refused: too many connections")
	r.pending, r.last = 0, time.Now()
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
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

func (s *Server) handle(ctx context.Context, c net.Conn) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		s.Log.Error().Str("network", c.RemoteAddr().Network()).Msg("not a Unix connection; dropped")
		return
	}
	peer, err := peerOf(uc)
	if err != nil {
		s.Log.Warn().Err(err).Msg("connection dropped: peer credentials unreadable")
		return
	}
	log := s.Log.With().Uint32("uid", peer.UID).Uint32("gid", peer.GID).Int32("pid", peer.PID).Logger()

	r := bufio.NewReaderSize(c, MaxLine+2) // room for the longest line and its CRLF
	w := bufio.NewWriter(c)
	for first := true; ; first = false {
		c.SetReadDeadline(time.Now().Add(s.IdleTimeout))
		// Checked after setting the deadline: a shutdown that woke idle
		// readers just before must not be undone by it.
		if ctx.Err() != nil {
			return
		}
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(bytes.TrimRight(line, "\r\n")) > MaxLine {
			log.Warn().Msg("request line too long; connection closed")
			w.Flush()
			refuse(c, (&Error{Code: CodeTooLong, Msg: fmt.Sprintf("request line longer than %d bytes", MaxLine)}).Line())
			return
		}
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			return // idle timeout, reset, or shutting down
		}
		if eof && len(line) == 0 {
			if first {
				s.serveBare(ctx, c, peer, log)
			}
			return
		}
		resp := s.answer(ctx, bytes.TrimSuffix(line, []byte("\n")), peer, log)
		w.WriteString(resp)
		w.WriteByte('\n')
		// Pipelined requests already in the buffer get their answers in one write.
		if r.Buffered() == 0 || eof {
			c.SetWriteDeadline(time.Now().Add(s.IdleTimeout))
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

// answer turns one request line into one response line.
func (s *Server) answer(ctx context.Context, line []byte, peer Peer, log zerolog.Logger) string {
	req, perr := Parse(line)
	if perr != nil {
		log.Debug().Str("code", perr.Code).Msg("bad request")
		return perr.Line()
	}
	switch req.Verb {
	case VerbPing:
		return "OK PONG"
	case VerbList:
		names := s.Tokens.Names(peer)
		if len(names) == 0 {
			return "OK"
		}
		return "OK " + strings.Join(names, " ")
	}
	t, err := s.token(ctx, req.Name, peer, log)
	if err != nil {
		return err.Line()
	}
	switch req.Verb {
	case VerbHeader:
		return "OK " + t.Type + " " + t.Value
	case VerbInfo:
		return fmt.Sprintf("OK name=%s token_type=%s expires_in=%d expires_at=%s fetched_at=%s scope=%s",
			t.Name, t.Type, int64(time.Until(t.ExpiresAt)/time.Second),
			t.ExpiresAt.UTC().Format(time.RFC3339), t.FetchedAt.UTC().Format(time.RFC3339), t.Scope)
	default:
		return "OK " + t.Value
	}
}

// token asks Tokens and turns any failure into a protocol error.
func (s *Server) token(ctx context.Context, name string, peer Peer, log zerolog.Logger) (Token, *Error) {
	t, err := s.Tokens.Token(ctx, name, peer)
	if err == nil {
		return t, nil
	}
	var perr *Error
	if !errors.As(err, &perr) {
		perr = &Error{Code: CodeUnavailable, Msg: err.Error()}
	}
	if perr.Code == CodeDenied {
		log.Warn().Str("token", name).Str("addr", peer.Addr).Msg("peer denied")
	} else {
		log.Debug().Str("token", name).Str("code", perr.Code).Msg("request failed")
	}
	return Token{}, perr
}

// serveBare answers a client that sent nothing and closed its side: the bare
// token and EOF. A LoadCredential= peer selects the token by credential id.
// On failure it writes nothing, since an error text would become the
// credential, and says so loudly in the log instead.
func (s *Server) serveBare(ctx context.Context, c net.Conn, peer Peer, log zerolog.Logger) {
	name := ""
	unit, id, isCred := peer.Credential()
	if isCred {
		log = log.With().Str("unit", unit).Str("credential", id).Logger()
		if ValidName(id) {
			name = id
		}
	}
	t, perr := s.token(ctx, name, peer, log)
	if perr != nil && perr.Code == CodeUnknown && name != "" {
		name = ""
		t, perr = s.token(ctx, name, peer, log)
	}
	if perr != nil {
		log.Warn().Str("token", name).Str("code", perr.Code).Str("reason", perr.Msg).Msg("connect-and-read client gets nothing")
		return
	}
	if isCred {
		log.Info().Str("token", t.Name).Msg("token served to LoadCredential=")
	}
	c.SetWriteDeadline(time.Now().Add(s.IdleTimeout))
	io.WriteString(c, t.Value)
}
