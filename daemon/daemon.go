// Package daemon is tokend's core: the keepers that hold one fresh OAuth2
// token each, and the lifecycle that ties them to Vault, the Unix socket
// and systemd. Its configuration comes from package config.
//
// Each configured token has a keeper whose single loop reads the client
// credentials from Vault, performs the client-credentials grant, and
// sleeps until the next refresh is due (75–80% of the lifetime, jittered,
// and early enough to beat min_remaining) or the next retry (full-jitter
// exponential backoff). Requests never wait on the network while a valid
// token exists: they load an atomic pointer.
//
// A registry maps names to keepers and allow lists; SIGHUP swaps in a new
// one, keeping the keepers (and tokens) whose fetch settings did not change.
package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/internal/buildinfo"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
	"github.com/tokend/tokend/vaultsrc"
)

// Options are what main hands to Run.
type Options struct {
	ConfigPath string
	Log        *LogWriter
	// Reload makes tokend reread its configuration, once per receive
	// (main sends one per SIGHUP).
	Reload <-chan struct{}
	// Notify sends an sd_notify state. nil means systemd's NOTIFY_SOCKET,
	// a no-op outside systemd; Watchdog then comes from WATCHDOG_USEC.
	Notify func(state string) error
	// Watchdog is how often systemd expects WATCHDOG=1 (0: no watchdog);
	// used with Notify.
	Watchdog time.Duration
}

// Run loads the configuration, serves until ctx ends, and returns nil on a
// clean stop. A bad configuration is returned as *ConfigError.
func Run(ctx context.Context, opts Options) error {
	cfg, rep, err := config.Check(opts.ConfigPath, config.CheckOptions{Activated: server.Activating()})
	if err != nil {
		return err
	}
	idProblem := config.IDMapProblem(os.ReadFile)
	opts.Log.SetLevel(cfg.LogLevel)
	log := opts.Log.Logger()
	if idProblem != "" {
		log.Warn().Str("problem", idProblem).Msg("peer ids are not the host's: the per-uid connection cap and the logs cannot tell clients apart")
	}
	d := &daemon{
		reloads:   opts.Reload,
		notify:    newNotifier(log, opts.Notify, opts.Watchdog),
		idProblem: idProblem,
		path:      opts.ConfigPath,
		logw:      opts.Log,
		log:       log,
		cfg:       cfg,
		hc:        tokenClient(nil, nil),
		poke:      make(chan struct{}, 1),
		creds:     &credsRef{},
		shareID:   shareID(),
	}
	d.metrics = newMetrics(d.tokenStates, func() int64 {
		if srv := d.srv; srv != nil {
			return srv.Active()
		}
		return 0
	})
	d.metrics.loaded(nil, false)
	d.warn(rep)
	return d.run(ctx)
}

// tokenClient is the HTTP client for token requests. It follows no
// redirect: the request carries the client secret (see fetch). roots nil
// means the system's; cert, when set, gives the client certificate
// (tls_client_auth).
func tokenClient(roots *x509.CertPool, cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *http.Client {
	t := &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}
	if roots != nil || cert != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots, GetClientCertificate: cert, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type daemon struct {
	reloads   <-chan struct{}
	notify    *notifier
	ready     atomic.Bool // READY=1 was sent
	idProblem string      // why peer ids may not be the host's; "" when they are
	activated bool        // the socket came from systemd
	path      string
	logw      *LogWriter
	log       zerolog.Logger
	cfg       *config.Config // run goroutine only
	hc        *http.Client
	creds     *credsRef
	shareID   string // this process in shared entries: lease_holder, fetched_by
	reg       atomic.Pointer[registry]
	srv       *server.Server
	ln        net.Listener
	poke      chan struct{}
	metrics   *metrics

	ctx         context.Context // lives as long as the keepers
	wg          sync.WaitGroup
	vaultCancel context.CancelFunc
}

// credsRef lets a reload swap the Vault source under running keepers.
type credsRef struct {
	p atomic.Pointer[vaultsrc.Source]
}

func (c *credsRef) Read(ctx context.Context, s vaultsrc.Secret) (vaultsrc.Credentials, error) {
	return c.p.Load().Read(ctx, s)
}

func (c *credsRef) TransitKeyType(ctx context.Context, mount, key string) (string, error) {
	return c.p.Load().TransitKeyType(ctx, mount, key)
}

func (c *credsRef) ReadEntry(ctx context.Context, mount, path string) (map[string]string, int, error) {
	return c.p.Load().ReadEntry(ctx, mount, path)
}

func (c *credsRef) WriteEntry(ctx context.Context, mount, path string, fields map[string]string, cas int) (int, error) {
	return c.p.Load().WriteEntry(ctx, mount, path, fields, cas)
}

func (c *credsRef) TransitSign(ctx context.Context, mount, key, alg string, input []byte) ([]byte, error) {
	return c.p.Load().TransitSign(ctx, mount, key, alg, input)
}

type registry struct {
	def     string
	names   []string // sorted
	entries map[string]*entry
	// replaced is closed when a reload replaces this registry.
	replaced chan struct{}
}

type entry struct {
	k      *keeper
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
	if q.Min > 0 {
		return e.k.getFresh(ctx, q.Wait, q.Min)
	}
	return e.k.get(ctx, q.Wait)
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
		wake := e.k.next()
		now := time.Now()
		t := e.k.tok.Load()
		var until *time.Timer
		if why := e.k.unservable(t, now); why != nil {
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
			until = time.NewTimer(t.ExpiresAt.Sub(now) - e.k.cfg.MinRemaining + time.Millisecond)
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
	return e.k.snapshot(now).status(name, now), nil
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
		out = append(out, tokenState{name: n, snap: k.snapshot(now), minRemaining: k.cfg.MinRemaining})
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

// run serves until ctx ends: the listener, Vault, the keepers, the socket
// server and the supervisor, and a reload at each receive on d.reloads.
func (d *daemon) run(ctx context.Context) error {
	ln, err := d.listen()
	if err != nil {
		return err
	}
	d.ln = ln

	kctx, stopKeepers := context.WithCancel(context.Background())
	defer stopKeepers()
	d.ctx = kctx
	if err := d.startVault(d.cfg.Vault); err != nil {
		ln.Close()
		return err
	}
	d.install(d.newRegistry(d.cfg, nil))

	d.srv = &server.Server{Tokens: d, Meter: d.metrics, Log: d.log.With().Str("component", "socket").Logger(),
		IdleTimeout: d.cfg.IdleTimeout, FirstTokenWait: d.cfg.FirstTokenWait}
	d.srv.SetMaxConns(d.cfg.MaxConnections)
	d.srv.SetMaxPerUID(d.cfg.MaxPerUID)
	sctx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	served := make(chan error, 1)
	go func() { served <- d.srv.Serve(sctx, ln) }()

	if d.cfg.MetricsListen != "" {
		stopMetrics, err := d.serveMetrics(d.cfg.MetricsListen)
		if err != nil {
			stopServer()
			<-served
			return err
		}
		defer stopMetrics()
	}

	superCtx, stopSuper := context.WithCancel(context.Background())
	superDone := make(chan struct{})
	go func() { defer close(superDone); d.supervise(superCtx, d.notify) }()
	defer func() { stopSuper(); <-superDone }()

	d.log.Info().Str("version", buildinfo.Version).Int("tokens", len(d.cfg.Tokens)).Msg("tokend started")
	for {
		select {
		case <-ctx.Done():
			d.shutdown(stopServer, served, stopKeepers)
			return nil
		case err := <-served:
			return fmt.Errorf("socket server stopped: %w", err)
		case <-d.reloads:
			d.reloadNotified()
		}
	}
}

// listen takes the socket systemd passed, else creates the configured one.
func (d *daemon) listen() (net.Listener, error) {
	ln, activated, err := server.Activated()
	if err != nil {
		return nil, err
	}
	d.activated = activated
	if activated {
		d.log.Info().Str("socket", ln.Addr().String()).Msg("serving on the socket passed by systemd")
		return ln, nil
	}
	if ln, err = server.Listen(d.cfg.Socket, d.cfg.SocketMode, d.cfg.SocketGID); err != nil {
		if dir := filepath.Dir(d.cfg.Socket); !dirExists(dir) {
			return nil, &config.ConfigError{File: d.path, Problems: []string{fmt.Sprintf("socket: directory %q does not exist: start tokend through tokend.socket (systemctl start tokend.socket), or make it first (install -d -m 0755 %s)", dir, dir)}}
		}
		return nil, err
	}
	d.log.Info().Str("socket", d.cfg.Socket).Str("mode", fmt.Sprintf("%04o", d.cfg.SocketMode)).Msg("listening")
	return ln, nil
}

// shutdown stops accepting, lets answers in flight finish (for a while),
// then stops the keepers and Vault.
func (d *daemon) shutdown(stopServer func(), served <-chan error, stopKeepers func()) {
	d.notify.send(sddaemon.SdNotifyStopping)
	d.log.Info().Msg("stopping: finishing answers in flight")
	stopServer()
	select {
	case <-served:
	case <-time.After(3 * time.Second):
		d.log.Warn().Msg("connections still open after 3s; exiting anyway")
	}
	stopKeepers()
	d.wg.Wait()
	d.log.Info().Msg("stopped")
}

// reloadNotified reloads, telling systemd once it is ready: before the
// first READY=1 a reload is not systemd's business, and READY=1 after it
// would announce tokens that do not exist yet.
func (d *daemon) reloadNotified() {
	ready := d.ready.Load()
	if ready {
		d.notify.send(sddaemon.SdNotifyReloading + "\n" + monotonicUsec())
	}
	d.reload()
	if ready {
		d.notify.send(sddaemon.SdNotifyReady + "\n" + statusLine(d.status()))
	}
}

func (d *daemon) startVault(vc vaultsrc.Config) error {
	src, err := vaultsrc.New(vc, d.log.With().Str("component", "vault").Logger())
	if err != nil {
		return err
	}
	src.OnRead = func(err error) { d.metrics.vaultReads.WithLabelValues(result(err)).Inc() }
	src.OnLogin = func(err error) { d.metrics.vaultLogins.WithLabelValues(result(err)).Inc() }
	ctx, cancel := context.WithCancel(d.ctx)
	d.wg.Add(1)
	go func() { defer d.wg.Done(); src.Run(ctx) }()
	d.creds.p.Store(src)
	if d.vaultCancel != nil {
		d.vaultCancel()
	}
	d.vaultCancel = cancel
	d.log.Info().Str("address", src.Address()).Str("auth", vc.Auth).Msg("vault source configured")
	return nil
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
		if prev := oldEntries[name]; prev != nil && prev.k.cfg == tc.Fetch {
			e = &entry{k: prev.k, access: tc.Access, cancel: prev.cancel}
		} else {
			k := newKeeper(tc.Fetch, d.creds, d.hc, d.log)
			if tc.CAFile != "" || tc.ClientAuth == "tls_client_auth" {
				var pool *x509.CertPool
				if tc.CAFile != "" {
					var err error
					if pool, err = config.CAPool(tc.CAFile, tc.CAOnly); err != nil {
						// Checked when the config was read; if the file
						// went since, the requests fail and say so.
						d.log.Error().Err(err).Str("token", name).Msg("ca_file unusable; using the system roots")
					}
				}
				var cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
				if tc.ClientAuth == "tls_client_auth" {
					cert = k.clientCertificate
				}
				k.hc = tokenClient(pool, cert)
			}
			if tc.SharePath != "" {
				k.share = d.sharer(k, tc)
			}
			k.changed = d.pokeSupervisor
			k.fetched = func(result string, took time.Duration) { d.metrics.fetched(name, result, took) }
			ctx, cancel := context.WithCancel(d.ctx)
			d.wg.Add(1)
			go func() { defer d.wg.Done(); k.run(ctx) }()
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

// sharer is k's side of the shared entry.
func (d *daemon) sharer(k *keeper, tc *config.TokenConfig) *sharer {
	name := tc.Name
	d.metrics.tokenShared(name)
	s := &sharer{
		mount: tc.ShareMount, path: tc.SharePath, id: d.shareID, config: shareConfig(&tc.Fetch), scope: tc.Scope,
		policy: newSharePolicy(tc.MinRemaining, tc.RequestTimeout, tc.RetryMax),
		store:  d.creds, rand: k.rand, jitter: k.rand(),
		log:      k.log.With().Str("share_path", tc.ShareMount+"/"+tc.SharePath).Logger(),
		read:     func(result string) { d.metrics.shareReads.WithLabelValues(name, result).Inc() },
		leased:   func() { d.metrics.shareLeases.WithLabelValues(name).Inc() },
		fellBack: func() { d.metrics.shareFallbacks.WithLabelValues(name).Inc() },
	}
	s.log.Info().Str("instance", s.id).Msg("sharing this token through vault")
	return s
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

// reload applies a new configuration file, or keeps the old one serving.
func (d *daemon) reload() {
	cfg, rep, err := config.Check(d.path, config.CheckOptions{Activated: d.activated})
	if err != nil {
		d.log.Error().Err(err).Msg("reload failed; the previous configuration keeps serving")
		d.metrics.loaded(err, true)
		return
	}
	d.warn(rep)
	old := d.cfg
	if cfg.Listen != old.Listen {
		d.log.Warn().Msg("socket, socket_mode, socket_group and idle_timeout changes take effect at the next restart")
	}
	if cfg.MetricsListen != old.MetricsListen {
		d.log.Warn().Str("metrics_listen", cfg.MetricsListen).Str("serving", old.MetricsListen).Msg("metrics_listen changes take effect at the next restart")
	}
	if cfg.Vault != old.Vault {
		if err := d.startVault(cfg.Vault); err != nil {
			d.log.Error().Err(err).Msg("reload failed; the previous configuration keeps serving")
			d.metrics.loaded(err, true)
			return
		}
	}
	d.logw.SetLevel(cfg.LogLevel)
	d.srv.SetMaxConns(cfg.MaxConnections)
	d.srv.SetMaxPerUID(cfg.MaxPerUID)
	prev := d.reg.Load()
	next := d.newRegistry(cfg, prev)
	d.install(next)
	close(prev.replaced)
	var kept, stopped []string
	for name, e := range prev.entries {
		if n := next.entries[name]; n != nil && n.k == e.k {
			kept = append(kept, name)
		} else {
			e.cancel()
			stopped = append(stopped, name)
		}
		if next.entries[name] == nil {
			d.metrics.tokenRemoved(name)
		}
	}
	d.cfg = cfg
	d.metrics.loaded(nil, true)
	d.log.Info().Strs("kept", kept).Strs("restarted_or_removed", stopped).Int("tokens", len(next.names)).Msg("configuration reloaded")
}

// warn logs the operator mistakes that tokend can still run with.
func (d *daemon) warn(rep config.Report) {
	for _, w := range rep.Warnings {
		d.log.Warn().Str("problem", w).Msg("unsafe configuration")
	}
}

func (d *daemon) pokeSupervisor() {
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

// status is the one-line summary for systemd's STATUS=.
func (d *daemon) status() string {
	reg := d.reg.Load()
	now := time.Now()
	var waiting []string
	for _, name := range reg.names {
		s := reg.entries[name].k.snapshot(now)
		if s.Servable && s.Err == "" {
			continue
		}
		why := s.why()
		if s.Err != "" {
			why += fmt.Sprintf(", retry in %ds", int64(max(s.Next.Sub(now), 0)/time.Second))
		}
		if s.Servable {
			why = "still valid until " + s.Token.ExpiresAt.UTC().Format("15:04:05Z") + "; " + why
		}
		waiting = append(waiting, name+": "+why)
	}
	if len(waiting) > 0 {
		return "waiting: " + strings.Join(waiting, "; ")
	}
	def := reg.entries[reg.def].k.tok.Load()
	return fmt.Sprintf("serving %d token%s; %s valid until %s", len(reg.names), plural(len(reg.names)), reg.def, def.ExpiresAt.UTC().Format("15:04:05Z"))
}

// allReady reports whether every configured token has been obtained once.
func (d *daemon) allReady() bool {
	for _, e := range d.reg.Load().entries {
		if e.k.tok.Load() == nil {
			return false
		}
	}
	return true
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func dirExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
