package daemon

import (
	"context"
	"crypto/x509"
	"fmt"
	"sort"
	"time"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/tokens"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
)

// The registry: the tokens by name with their keepers and allow lists,
// the server.Tokens API that reads it, and its rebuilding at each reload.

type registry struct {
	def     string
	names   []string // sorted
	entries map[string]*entry
	// replaced is closed when a reload replaces this registry.
	replaced chan struct{}
}

type entry struct {
	k      *tokens.Keeper
	access config.Access
	cancel context.CancelFunc
	sink   *sink // nil: no file
}

// sink is a running file sink.
type sink struct {
	cfg    config.FileSink
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *sink) stop() {
	if s != nil && s.done != nil {
		s.cancel()
		<-s.done
	}
}

var _ server.Tokens = (*daemon)(nil)

// Token implements server.Tokens. It never touches the network; min=
// may make the keeper refresh early, and wait for it.
func (d *daemon) Token(ctx context.Context, q server.Query, p server.Peer) (server.Token, error) {
	e, _, err := d.lookup(q.Name, p)
	if err != nil {
		return server.Token{}, err
	}
	switch {
	case q.Rejected != "":
		return e.k.GetReplacing(ctx, q.Wait, q.Rejected)
	case q.Min > 0:
		return e.k.GetFresh(ctx, q.Wait, q.Min)
	}
	return e.k.Get(ctx, q.Wait)
}

// Proof implements server.Tokens.
func (d *daemon) Proof(ctx context.Context, q server.Query, method, url string, p server.Peer) (string, error) {
	e, _, err := d.lookup(q.Name, p)
	if err != nil {
		return "", err
	}
	return e.k.Proof(ctx, q.Wait, method, url)
}

// Watch implements server.Tokens.
func (d *daemon) Watch(ctx context.Context, q server.Query, p server.Peer, send func(server.Token, error) error) error {
	return d.follow(ctx, q.Name, &p, send)
}

// follow calls send with the token called name ("" for the default) when
// it changes, and with why when it becomes unservable (under
// min_remaining, by time alone, or no token yet), until ctx ends or send
// fails. The token and p's access to it are looked up again after every
// reload; losing either ends the follow with that error. p nil is the
// daemon itself (the file sink): no allow list applies.
func (d *daemon) follow(ctx context.Context, name string, p *server.Peer, send func(server.Token, error) error) error {
	var last *server.Token
	unservable := false
	for {
		reg := d.reg.Load()
		e, _, err := reg.lookup(name, p)
		if err != nil {
			return err
		}
		wake := e.k.Next()
		now := time.Now()
		t := e.k.Current()
		var until *time.Timer
		if why := e.k.Unservable(t, now); why != nil {
			if !unservable {
				if err := send(server.Token{}, why); err != nil {
					return err
				}
				unservable, last = true, nil
			}
		} else {
			if t != last {
				if err := send(*t, nil); err != nil {
					return err
				}
				last, unservable = t, false
			}
			// It becomes unservable by time alone.
			until = time.NewTimer(e.k.Left(t, now) - e.k.Config().MinRemaining + time.Millisecond)
		}
		var timeUp <-chan time.Time
		if until != nil {
			timeUp = until.C
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-reg.replaced:
		case <-timeUp:
		}
		if until != nil {
			until.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// Status implements server.Tokens.
func (d *daemon) Status(name string, p server.Peer) (proto.Status, error) {
	e, name, err := d.lookup(name, p)
	if err != nil {
		return proto.Status{}, err
	}
	now := time.Now()
	return e.k.Snapshot(now).Status(name, now), nil
}

// Metrics implements server.Tokens: the series of the tokens p may read.
func (d *daemon) Metrics(p server.Peer) ([]byte, error) {
	reg := d.reg.Load()
	return d.metrics.exposition(func(token string) bool {
		e := reg.entries[token]
		return e != nil && allows(e.access, p)
	})
}

// lookup finds the token called name ("" for the default) if p may read it.
func (d *daemon) lookup(name string, p server.Peer) (*entry, string, error) {
	return d.reg.Load().lookup(name, &p)
}

// lookup finds the token called name ("" for the default) and, unless p
// is nil (the daemon itself), checks that p may read it.
func (reg *registry) lookup(name string, p *server.Peer) (*entry, string, error) {
	if name == "" {
		name = reg.def
	}
	e := reg.entries[name]
	if e == nil {
		return nil, name, &proto.Error{Code: proto.CodeUnknown, Msg: fmt.Sprintf("no token named %q; LIST shows the ones you may read", name)}
	}
	if p != nil && !allows(e.access, *p) {
		return nil, name, &server.NamedError{Name: name, Err: &proto.Error{Code: proto.CodeDenied, Msg: fmt.Sprintf("uid %d may not read token %q", p.UID, name)}}
	}
	return e, name, nil
}

// tokenStates are the snapshots of every token, for the gauges.
func (d *daemon) tokenStates(now time.Time) []tokenState {
	reg := d.reg.Load()
	if reg == nil {
		return nil
	}
	out := make([]tokenState, 0, len(reg.names))
	for _, n := range reg.names {
		k := reg.entries[n].k
		cfg := k.Config()
		out = append(out, tokenState{name: n, snap: k.Snapshot(now), minRemaining: cfg.MinRemaining, source: cfg.Source()})
	}
	return out
}

// Names implements server.Tokens.
func (d *daemon) Names(p server.Peer) []string {
	reg := d.reg.Load()
	var out []string
	for _, n := range reg.names {
		if allows(reg.entries[n].access, p) {
			out = append(out, n)
		}
	}
	return out
}

// newRegistry builds the registry for cfg, reusing keepers from old whose
// fetch settings are unchanged, and starting the others.
func (d *daemon) newRegistry(cfg *config.Config, old *registry) *registry {
	reg := &registry{def: cfg.DefaultToken, entries: map[string]*entry{}, replaced: make(chan struct{})}
	var oldEntries map[string]*entry
	if old != nil {
		oldEntries = old.entries
	}
	// File sinks that change or go stop first, removing their file, so
	// that none removes a file its successor just wrote.
	for name, e := range oldEntries {
		if tc := cfg.Tokens[name]; e.sink != nil && (tc == nil || tc.File == nil || *tc.File != e.sink.cfg) {
			e.sink.stop()
			e.sink = nil
		}
	}
	for name, tc := range cfg.Tokens {
		reg.names = append(reg.names, name)
		d.metrics.tokenAdded(name)
		var e *entry
		if prev := oldEntries[name]; prev != nil && prev.k.Config() == tc.Fetch {
			e = &entry{k: prev.k, access: tc.Access, cancel: prev.cancel}
		} else {
			var roots *x509.CertPool
			if tc.CAFile != "" {
				var err error
				if roots, err = config.CAPool(tc.CAFile, tc.CAOnly); err != nil {
					// Checked when the config was read; if the file
					// went since, the requests fail and say so.
					d.log.Error().Err(err).Str("token", name).Msg("ca_file unusable; using the system roots")
				}
			}
			if tc.SharePath != "" {
				d.metrics.tokenShared(name)
			}
			k := tokens.New(tc.Fetch, tokens.Deps{Creds: d.creds, Client: d.hc, Roots: roots, Observer: tokenObserver{d, name}, Log: d.log,
				ShareID: d.shareID, ShareStore: d.creds})
			ctx, cancel := context.WithCancel(d.ctx)
			d.wg.Add(1)
			go func() { defer d.wg.Done(); k.Run(ctx) }()
			e = &entry{k: k, access: tc.Access, cancel: cancel}
		}
		if prev := oldEntries[name]; prev != nil && prev.sink != nil {
			e.sink = prev.sink // same file settings: it follows the name
		} else if tc.File != nil {
			e.sink = &sink{cfg: *tc.File} // started by install, once reg is in use
		}
		reg.entries[name] = e
	}
	sort.Strings(reg.names)
	return reg
}

// install puts reg in use, then starts its new file sinks (which look
// their token up in it).
func (d *daemon) install(reg *registry) {
	d.reg.Store(reg)
	for name, e := range reg.entries {
		if s := e.sink; s != nil && s.done == nil {
			ctx, cancel := context.WithCancel(d.ctx)
			s.cancel, s.done = cancel, make(chan struct{})
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				defer close(s.done)
				d.sinkFile(ctx, name, s.cfg)
			}()
		}
	}
}
