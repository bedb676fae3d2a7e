// Package daemon is the tokend process, and the only place its parts are
// wired together: Run loads the configuration (package config), takes
// or makes the socket, starts the Vault source (package vaultsrc) and one
// keeper per token (package tokens, which asks through package oauth),
// serves them with package socket/server, and tells systemd how it goes.
//
// A registry maps names to keepers and allow lists, and is what the
// socket server reads; SIGHUP swaps in a new one, keeping the keepers
// (and tokens) whose fetch settings did not change. The metrics, the
// file sinks, the supervisor (watchdog, STATUS=) and the log live here
// too.
package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/oauth"
	"github.com/tokend/tokend/daemon/tokens"
	"github.com/tokend/tokend/internal/buildinfo"
	"github.com/tokend/tokend/socket/server"
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
		hc:        oauth.NewClient(nil, nil),
		poke:      make(chan struct{}, 1),
		creds:     &credsRef{},
		shareID:   tokens.ShareID(),
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
	if err := d.useVault(d.cfg, nil); err != nil {
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

	stopProxies, err := d.startProxies(d.cfg)
	if err != nil {
		stopServer()
		<-served
		return err
	}
	defer stopProxies()

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
		s := reg.entries[name].k.Snapshot(now)
		if s.Servable && s.Err == "" {
			continue
		}
		why := s.Why()
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
	def := reg.entries[reg.def].k.Current()
	return fmt.Sprintf("serving %d token%s; %s valid until %s", len(reg.names), plural(len(reg.names)), reg.def, def.ExpiresAt.UTC().Format("15:04:05Z"))
}

// allReady reports whether every configured token has been obtained once.
func (d *daemon) allReady() bool {
	for _, e := range d.reg.Load().entries {
		if e.k.Current() == nil {
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
