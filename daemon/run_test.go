package daemon

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// inProcess is daemon.Run in this process, as cmd/tokend runs it.
type inProcess struct {
	sock, config string
	reload       chan struct{}
	notes        *daemontest.Notes
	logs         *daemontest.SyncBuf
	stop         func() error
}

func runInProcess(t *testing.T, cfg daemontest.Config) *inProcess {
	t.Helper()
	dir := t.TempDir()
	p := &inProcess{sock: filepath.Join(dir, "t.sock"), config: filepath.Join(dir, "tokend.toml"),
		reload: make(chan struct{}), notes: &daemontest.Notes{}, logs: &daemontest.SyncBuf{}}
	p.write(t, cfg, "")
	t.Setenv("LISTEN_FDS", "") // not socket-activated, whatever the test runner inherited
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigPath: p.config, Log: NewLogWriterTo(p.logs), Reload: p.reload,
			Notify: p.notes.Send, Watchdog: 400 * time.Millisecond})
	}()
	var once sync.Once
	var err error
	p.stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("logs:\n%s\nsd_notify: %s", p.logs, p.notes.String())
		}
	})
	daemontest.WaitFor(t, "the socket", 10*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run returned before listening: %v\n%s", err, p.logs)
		default:
		}
		_, err := proto.Client{Path: p.sock, Timeout: time.Second}.Do(context.Background(), "PING")
		return err == nil
	})
	return p
}

// write writes cfg on p's socket, then extra lines (in the last table).
func (p *inProcess) write(t *testing.T, cfg daemontest.Config, extra string) {
	cfg.Socket = p.sock
	if err := os.WriteFile(p.config, []byte(cfg.TOML()+extra), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (p *inProcess) ask(t *testing.T, req string) (string, error) {
	return proto.Client{Path: p.sock, Timeout: 10 * time.Second}.Do(context.Background(), req)
}

// The lifecycle in-process: STATUS= says why while the endpoint fails,
// READY=1 once the token exists, the watchdog petted, a reload announced
// with RELOADING=1 and READY=1, a broken reload that keeps the old
// configuration, and STOPPING=1 and a nil return at the end.
func TestRunLifecycle(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep.Push(daemontest.Fault{Status: 503, Body: `{"error":"temporarily_unavailable"}`}, daemontest.Fault{Status: 503})
	cfg := daemontest.StandInConfig(t, ep)
	p := runInProcess(t, cfg)

	daemontest.WaitFor(t, "READY=1", 10*time.Second, func() bool { return p.notes.Count("READY=1") == 1 })
	all := p.notes.String()
	if w, r := strings.Index(all, "STATUS=waiting: vibes: token endpoint answered 503"), strings.Index(all, "READY=1"); w < 0 || w > r {
		t.Errorf("no waiting STATUS= before READY=1: %s", all)
	}
	if !regexp.MustCompile(`READY=1\nSTATUS=serving 1 token; vibes valid until \d\d:\d\d:\d\dZ`).MatchString(all) {
		t.Errorf("READY=1 without a serving STATUS=: %s", all)
	}
	tok, err := p.ask(t, "TOKEN")
	if err != nil || tok != ep.LastToken() {
		t.Fatalf("TOKEN: %q %v", tok, err)
	}
	daemontest.WaitFor(t, "the watchdog", 5*time.Second, func() bool { return p.notes.Count("WATCHDOG=1") >= 3 })

	p.reload <- struct{}{}
	daemontest.WaitFor(t, "READY=1 after the reload", 5*time.Second, func() bool { return p.notes.Count("READY=1") == 2 })
	if !regexp.MustCompile(`RELOADING=1\nMONOTONIC_USEC=\d+`).MatchString(p.notes.String()) {
		t.Errorf("no RELOADING=1 with MONOTONIC_USEC: %s", p.notes.String())
	}
	if got, _ := p.ask(t, "TOKEN"); got != tok {
		t.Errorf("an unchanged token was refetched by the reload")
	}

	p.write(t, cfg, "\nbogus = 1\n")
	p.reload <- struct{}{}
	daemontest.WaitFor(t, "the failed reload", 5*time.Second, func() bool { return strings.Contains(p.logs.String(), "reload failed") })
	if got, err := p.ask(t, "TOKEN"); got != tok || err != nil {
		t.Errorf("after a broken reload: %q %v", got, err)
	}
	if !strings.Contains(p.logs.String(), `line `) || !strings.Contains(p.logs.String(), "bogus: unknown key") {
		t.Errorf("the broken reload does not name the key and line:\n%s", p.logs)
	}

	if err := p.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if p.notes.Count("STOPPING=1") != 1 {
		t.Errorf("no STOPPING=1: %s", p.notes.String())
	}
	if _, err := os.Stat(p.sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

// Reloads in the metrics: counted by result, the last success stamped, a
// removed token's series gone and an added token's counters at 0 at once;
// a metrics_listen change is logged as needing a restart.
func TestRunReloadMetrics(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	cfg := daemontest.StandInConfig(t, ep)
	p := runInProcess(t, cfg)
	if _, err := p.ask(t, "TOKEN"); err != nil {
		t.Fatal(err)
	}
	metrics := func() daemontest.Metrics {
		t.Helper()
		text, err := proto.Client{Path: p.sock}.Metrics(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return daemontest.ParseMetrics(t, string(text))
	}
	m := metrics()
	stamp, _ := m.Value("tokend_config_last_reload_success_timestamp_seconds")
	if v, ok := m.Value("tokend_config_reloads_total", "result", "error"); !ok || v != 0 {
		t.Errorf("reload errors %v (present %v) at start", v, ok)
	}

	p.write(t, cfg, "\nbogus = 1\n")
	p.reload <- struct{}{}
	daemontest.WaitFor(t, "the failed reload", 5*time.Second, func() bool { return strings.Contains(p.logs.String(), "reload failed") })
	cfg2 := cfg.Clone()
	cfg2.MetricsListen = "127.0.0.1:1"
	cfg2.Token["second"] = &daemontest.TokenConfig{TokenURL: ep.TokenURL(), Scope: daemontest.Scope, KVPath: "tokend/second"}
	cfg2.DefaultToken = "second"
	delete(cfg2.Token, "vibes")
	p.write(t, cfg2, "")
	p.reload <- struct{}{}
	daemontest.WaitFor(t, "the good reload", 5*time.Second, func() bool { return strings.Contains(p.logs.String(), "configuration reloaded") })

	m = metrics()
	for result, want := range map[string]float64{"error": 1, "success": 1} {
		if v, _ := m.Value("tokend_config_reloads_total", "result", result); v != want {
			t.Errorf("reloads{result=%q} = %v, want %v", result, v, want)
		}
	}
	if v, _ := m.Value("tokend_config_last_reload_success_timestamp_seconds"); v <= stamp {
		t.Errorf("last reload success %v, not after %v", v, stamp)
	}
	if _, ok := m.Value("tokend_token_fetches_total", "token", "vibes"); ok {
		t.Errorf("the removed token's series remain")
	}
	if _, ok := m.Value("tokend_token_valid", "token", "vibes"); ok {
		t.Errorf("the removed token's gauge remains")
	}
	if v, ok := m.Value("tokend_token_fetches_total", "token", "second", "result", "rejected"); !ok || v != 0 {
		t.Errorf("the new token's counters: %v %v", v, ok)
	}
	if !strings.Contains(p.logs.String(), "metrics_listen changes take effect at the next restart") {
		t.Errorf("metrics_listen change not logged")
	}
}

// A reload that removes the token ends its watchers with the error; one
// that keeps it does not disturb them.
func TestRunReloadEndsWatch(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	cfg := daemontest.StandInConfig(t, ep)
	p := runInProcess(t, cfg)
	if _, err := p.ask(t, "TOKEN"); err != nil { // the first token exists
		t.Fatal(err)
	}
	c, err := net.Dial("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "WATCH vibes\n")
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if l, err := r.ReadString('\n'); err != nil || l != "OK "+ep.LastToken()+"\n" {
		t.Fatalf("WATCH: %q %v", l, err)
	}

	same := cfg.Clone()
	same.LogLevel = "debug"
	p.write(t, same, "")
	p.reload <- struct{}{}
	daemontest.WaitFor(t, "the first reload", 5*time.Second, func() bool {
		return strings.Contains(p.logs.String(), "configuration reloaded")
	})
	cfg2 := cfg.Clone()
	cfg2.Token["second"] = &daemontest.TokenConfig{TokenURL: ep.TokenURL(), Scope: daemontest.Scope, KVPath: "tokend/second"}
	cfg2.DefaultToken = "second"
	delete(cfg2.Token, "vibes")
	p.write(t, cfg2, "")
	p.reload <- struct{}{}
	l, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "ERR unknown-token ") {
		t.Errorf("after the token was removed: %q %v", l, err)
	}
	if rest, err := io.ReadAll(r); len(rest) > 0 || err != nil {
		t.Errorf("after the last line: %q %v, want EOF", rest, err)
	}
	daemontest.WaitFor(t, "both reloads logged", 5*time.Second, func() bool {
		return strings.Count(p.logs.String(), "configuration reloaded") == 2
	})
}

// ca_file: a token endpoint whose certificate only that file vouches for
// is reached with it, and not without; a reload adding it is a fetch
// change, so the keeper starts again and gets a token.
func TestRunCAFile(t *testing.T) {
	ep, caFile := daemontest.NewTLSEndpoint(t, "basic+body", "cid", "csecret")
	cfg := daemontest.StandInConfig(t, ep)
	p := runInProcess(t, cfg)
	daemontest.WaitFor(t, "the refusal of the endpoint's certificate", 10*time.Second, func() bool {
		out, err := p.ask(t, "STATUS")
		return err == nil && strings.Contains(out, "certificate signed by unknown authority")
	})
	with := cfg.Clone()
	with.Vibes().CAFile, with.Vibes().CAOnly = caFile, true
	p.write(t, with, "")
	p.reload <- struct{}{}
	daemontest.WaitFor(t, "a token through ca_file", 10*time.Second, func() bool {
		got, err := p.ask(t, "TOKEN")
		return err == nil && got == ep.LastToken()
	})

	bad := cfg.Clone()
	bad.Vibes().CAFile = filepath.Join(t.TempDir(), "none.pem")
	p.write(t, bad, "")
	p.reload <- struct{}{}
	daemontest.WaitFor(t, "the refused reload", 5*time.Second, func() bool {
		return strings.Contains(p.logs.String(), `token.vibes.ca_file: open `)
	})
}
