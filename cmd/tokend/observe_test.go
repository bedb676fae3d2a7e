package main

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// Observability, on the real binary: the metrics, STATUS, /healthz and
// tokenctl status follow the token through success, a failing endpoint
// (503: degraded, then unavailable), a rejecting one (401) and recovery;
// a denied peer is counted and sees no series of the token it may not
// read; no token appears in any of it.
func TestE2EObservability(t *testing.T) {
	if syscall.Getuid() != 0 {
		daemontest.Need(t, "root", "running tokenctl as another uid needs root")
	}
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	// 8s tokens, served while 3s are left, refreshed about 4s in (a
	// second's request timeout before the 5s they are servable).
	ep.SetTTL(8)
	cfg := daemontest.StandInConfig(t, ep)
	cfg.SocketMode = "0666"
	cfg.MetricsListen = fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	v := cfg.Vibes()
	v.MinRemaining, v.RequestTimeout, v.RetryMax, v.AllowUIDs = "3s", "1s", "1s", []int{4242}
	d := daemontest.StartTokend(t, cfg)
	base := "http://" + cfg.MetricsListen
	tok := d.Token()

	scrape := func() daemontest.Metrics {
		t.Helper()
		code, body := get(t, base+"/metrics", "")
		if code != 200 {
			t.Fatalf("/metrics: %d %s", code, body)
		}
		if strings.Contains(body, tok) || strings.Contains(body, "csecret") {
			t.Fatalf("a token or the secret in /metrics")
		}
		return daemontest.ParseMetrics(t, body)
	}
	value := func(m daemontest.Metrics, name string, labels ...string) float64 {
		t.Helper()
		v, ok := m.Value(name, labels...)
		if !ok {
			t.Fatalf("no series %s%v", name, labels)
		}
		return v
	}
	status := func() proto.Status {
		t.Helper()
		out, err := proto.Client{Path: d.Sock}.Do(t.Context(), "STATUS vibes")
		if err != nil {
			t.Fatalf("STATUS: %v", err)
		}
		st, err := proto.ParseStatus(out)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	// Healthy.
	m := scrape()
	if value(m, "tokend_token_fetches_total", "token", "vibes", "result", "success") < 1 || value(m, "tokend_token_valid", "token", "vibes") != 1 {
		t.Errorf("after a token: fetches %v, valid %v", m["tokend_token_fetches_total"], m["tokend_token_valid"])
	}
	for _, r := range []string{"rejected", "rate_limited", "error"} {
		if v, ok := m.Value("tokend_token_fetches_total", "token", "vibes", "result", r); !ok || v != 0 {
			t.Errorf("fetches_total{result=%q} = %v (present %v), want 0 from the start", r, v, ok)
		}
	}
	if exp := value(m, "tokend_token_expiration_timestamp_seconds", "token", "vibes"); exp < float64(time.Now().Unix()) || exp > float64(time.Now().Add(9*time.Second).Unix()) {
		t.Errorf("expiration %v, now %d", exp, time.Now().Unix())
	}
	if value(m, "tokend_vault_reads_total", "result", "success") < 1 || value(m, "tokend_build_info") != 1 {
		t.Errorf("vault reads %v, build_info %v", m["tokend_vault_reads_total"], m["tokend_build_info"])
	}
	value(m, "tokend_config_last_reload_success_timestamp_seconds")
	value(m, "tokend_connections")
	value(m, "go_goroutines")
	value(m, "process_resident_memory_bytes")
	if st := status(); st.State != proto.StateOK || st.Failures != 0 || st.LastError != "" || st.ExpiresIn < 1 || st.RefreshIn == proto.Unknown || st.LastSuccess.IsZero() {
		t.Errorf("STATUS when healthy: %+v", st)
	}
	if code, body := get(t, base+"/healthz", ""); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if out, _, code := d.Ctl("status"); code != 0 || !strings.Contains(out, "vibes") || !strings.Contains(out, " ok ") {
		t.Errorf("tokenctl status: exit %d\n%s", code, out)
	}

	// A denied peer is counted, and its METRICS holds no vibes series.
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if _, _, code := d.CtlAs(nobody, "get"); code != 1 {
		t.Errorf("nobody got the token")
	}
	if _, errs, code := d.CtlAs(nobody, "status", "vibes"); code != 1 || !strings.Contains(errs, "denied") {
		t.Errorf("nobody's STATUS: %d %q", code, errs)
	}
	text, _, code := d.CtlAs(nobody, "metrics")
	if code != 0 || !strings.Contains(text, "tokend_build_info") || strings.Contains(text, `token="vibes"`) {
		t.Errorf("nobody's METRICS (exit %d) holds vibes, or lacks the daemon's series:\n%s", code, text)
	}
	rootText, _, _ := d.Ctl("metrics")
	rm := daemontest.ParseMetrics(t, rootText+"\n")
	if value(rm, "tokend_token_valid", "token", "vibes") != 1 {
		t.Errorf("root's METRICS lacks vibes")
	}
	if value(scrape(), "tokend_requests_total", "verb", "TOKEN", "code", "denied") < 1 {
		t.Errorf("the denied TOKEN was not counted")
	}
	// It asked for the default token: the log names it.
	if !regexp.MustCompile(`"token":"vibes"[^\n]*"message":"peer denied"`).MatchString(d.Out.String()) {
		t.Errorf("the denial of the default token does not name it:\n%s", d.Out)
	}

	// The endpoint fails: degraded while the token lasts, then unavailable.
	ep.FailAll(daemontest.Fault{Status: 503, Body: `{"error":"temporarily_unavailable"}`})
	daemontest.WaitFor(t, "STATUS degraded", 15*time.Second, func() bool { return status().State == proto.StateDegraded })
	if st := status(); st.Failures < 1 || !strings.Contains(st.LastError, "503") {
		t.Errorf("degraded: %+v", st)
	}
	if out, _, code := d.Ctl("status"); code != 1 || !strings.Contains(out, "degraded") {
		t.Errorf("tokenctl status when degraded: exit %d\n%s", code, out)
	}
	daemontest.WaitFor(t, "STATUS unavailable", 15*time.Second, func() bool { return status().State == proto.StateUnavailable })
	m = scrape()
	if value(m, "tokend_token_valid", "token", "vibes") != 0 || value(m, "tokend_token_fetches_total", "token", "vibes", "result", "error") < 2 ||
		value(m, "tokend_token_consecutive_failures", "token", "vibes") < 2 {
		t.Errorf("when unavailable: valid %v, fetches %v, failures %v", m["tokend_token_valid"], m["tokend_token_fetches_total"], m["tokend_token_consecutive_failures"])
	}
	if code, body := get(t, base+"/healthz", ""); code != 503 || !strings.HasPrefix(body, "unavailable: vibes (") || !strings.Contains(body, "503") {
		t.Errorf("/healthz when unavailable: %d %q", code, body)
	}
	if out, _, code := d.Ctl("status"); code != 1 || !strings.Contains(out, "unavailable") {
		t.Errorf("tokenctl status when unavailable: exit %d\n%s", code, out)
	}
	// The wait before the next try is a duration a person reads.
	if !regexp.MustCompile(`"retry_in":"[0-9.]+m?s"[^\n]*"message":"token refresh failed"`).MatchString(d.Out.String()) {
		t.Errorf("retry_in is not a duration such as \"1.5s\":\n%s", d.Out)
	}

	// It rejects the client.
	ep.FailAll(daemontest.Fault{Status: 401, Body: `{"error":"invalid_client"}`})
	daemontest.WaitFor(t, "a rejected fetch", 15*time.Second, func() bool {
		v, _ := scrape().Value("tokend_token_fetches_total", "token", "vibes", "result", "rejected")
		return v >= 1
	})

	// Recovery.
	ep.ClearFaults()
	daemontest.WaitFor(t, "STATUS ok again", 15*time.Second, func() bool { return status().State == proto.StateOK })
	m = scrape()
	if value(m, "tokend_token_valid", "token", "vibes") != 1 || value(m, "tokend_token_consecutive_failures", "token", "vibes") != 0 {
		t.Errorf("after recovery: valid %v failures %v", m["tokend_token_valid"], m["tokend_token_consecutive_failures"])
	}
	if code, _ := get(t, base+"/healthz", ""); code != 200 {
		t.Errorf("/healthz after recovery: %d", code)
	}
	if _, _, code := d.Ctl("status"); code != 0 {
		t.Errorf("tokenctl status after recovery: exit %d", code)
	}

	// OpenMetrics when asked for; nothing but /metrics and /healthz.
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") {
		t.Errorf("OpenMetrics asked, got %q", ct)
	}
	for _, path := range []string{"/", "/token", "/metrics/x"} {
		if code, _ := get(t, base+path, ""); code != 404 {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}
	d.NoLeaks("csecret", tok, ep.LastToken())
}

func get(t *testing.T, url, accept string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The issuance budget: an endpoint that issues 1s tokens makes tokend ask
// every second; at max_fetches_per_hour = 10 it stops asking, says so once
// in the log, and counts the requests it did not make.
func TestE2EIssuanceBudget(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep.SetTTL(1)
	cfg := daemontest.StandInConfig(t, ep)
	v := cfg.Vibes()
	v.MinRemaining, v.RequestTimeout, v.MaxFetchesPerHour = "100ms", "1s", 10
	d := daemontest.StartTokend(t, cfg)
	daemontest.WaitFor(t, "ten token requests", 30*time.Second, func() bool { return ep.Calls.Load() >= 10 })
	time.Sleep(5 * time.Second)
	if n := ep.Calls.Load(); n != 10 {
		t.Errorf("%d token requests, want 10 (max_fetches_per_hour)", n)
	}
	logs := d.Out.String()
	if n := strings.Count(logs, "issuance budget spent: no token requests until the window allows"); n != 1 {
		t.Errorf("budget exhaustion logged %d times, want once", n)
	}
	text, err := proto.Client{Path: d.Sock}.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	m := daemontest.ParseMetrics(t, string(text))
	if v, _ := m.Value("tokend_token_fetches_total", "token", "vibes", "result", "budget_exhausted"); v < 1 {
		t.Errorf("budget_exhausted = %v", v)
	}
	if st, err := (proto.Client{Path: d.Sock}).Do(t.Context(), "STATUS"); err != nil || !strings.Contains(st, "issuance budget spent") {
		t.Errorf("STATUS: %q %v", st, err)
	}
}
