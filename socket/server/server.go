package server

import (
	"context"
	"errors"
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
	warnings     LimitedLog
	lingering    atomic.Int64 // refused connections not yet closed
	maxLingering int64        // bound on lingering; default 1024
	glances      chan refusal // refusals past the bound, for the glancers

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
	s.glances = make(chan refusal, glanceQueue)
	defer close(s.glances)
	for range glancers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range s.glances {
				s.countBusy(refuseAsked(r.c, r.line, 10*time.Millisecond))
			}
		}()
	}
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
