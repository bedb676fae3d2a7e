package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/socket/server"
)

// serveMetrics serves GET /metrics and GET /healthz on addr ("host:port"
// or "unix:/path") and nothing else: never a token. stop ends it.
func (d *daemon) serveMetrics(addr string) (stop func(), err error) {
	var ln net.Listener
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		// The token socket's mode and group: the same readers.
		ln, err = server.Listen(path, d.cfg.SocketMode, d.cfg.SocketGID)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		// The configuration chose the address: restarting will not free
		// it. A *ConfigError makes tokend exit 2, which systemd does not
		// restart (RestartPreventExitStatus=2).
		hint := "choose another address"
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = "another process listens there (ss -ltnp shows which); choose another port"
		}
		return nil, &config.ConfigError{File: d.path, Problems: []string{fmt.Sprintf("metrics_listen: %q: %v: %s", addr, errors.Unwrap(err), hint)}}
	}
	ln = capListener(ln, maxMetricsConns)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.HandleFunc("GET /healthz", d.healthz)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second}
	go srv.Serve(ln)
	d.log.Info().Str("metrics_listen", addr).Msg("serving /metrics and /healthz")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}

// healthz answers 200 "ok" when every token is servable, else 503 naming
// the ones that are not.
func (d *daemon) healthz(w http.ResponseWriter, _ *http.Request) {
	var down []string
	for _, t := range d.tokenStates(time.Now()) {
		if !t.snap.Servable {
			down = append(down, fmt.Sprintf("%s (%s)", t.name, t.snap.Why()))
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if len(down) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "unavailable: %s\n", strings.Join(down, "; "))
		return
	}
	fmt.Fprintln(w, "ok")
}

// maxMetricsConns bounds the metrics listener's open connections: idle
// scrapers must not take the descriptors the token socket needs.
const maxMetricsConns = 64

// capListener accepts at most n connections at once; past that it closes
// new ones at once.
func capListener(ln net.Listener, n int) net.Listener {
	return &cappedListener{Listener: ln, slots: make(chan struct{}, n)}
}

type cappedListener struct {
	net.Listener
	slots chan struct{}
}

func (l *cappedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &cappedConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			c.Close()
		}
	}
}

type cappedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *cappedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
