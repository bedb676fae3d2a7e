package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// The shared token (share_path), on the real binary and a real Vault dev
// server: eight tokend processes, as eight hosts would run them, with the
// Vault policy docs/sharing.md gives them.

const sharePath = "tokend/shared/vibes"

// shareVault starts Vault with the client's secret and a token for the
// hosts, limited to docs/sharing.md's policy; it returns the token's file.
func shareVault(t *testing.T) (*daemontest.Vault, string) {
	v := daemontest.StartVault(t)
	v.PutSecret("tokend/vibes", "cid", "csecret")
	v.Call("PUT", "sys/policies/acl/tokend-share", map[string]any{"policy": `
path "secret/data/tokend/vibes" { capabilities = ["read"] }
path "secret/data/` + sharePath + `" { capabilities = ["read", "create", "update"] }
`})
	tok := v.Call("POST", "auth/token/create", map[string]any{"policies": []string{"tokend-share"}, "ttl": "1h"})["auth"].(map[string]any)["client_token"].(string)
	file := filepath.Join(t.TempDir(), "vault-token")
	os.WriteFile(file, []byte(tok), 0o644)
	return v, file
}

// host is one tokend process of a fleet, with a client asking it for
// the token every 100 ms from the moment it started.
type host struct {
	*daemontest.Tokend
	askers   *daemontest.Askers
	instance string // its name in the shared entry
}

func startFleet(t *testing.T, n int, cfg daemontest.Config) []*host {
	var hosts []*host
	for range n {
		d := daemontest.StartTokend(t, cfg.Clone())
		h := &host{Tokend: d, askers: daemontest.StartAskers(proto.Client{Path: d.Sock}, 1, 100*time.Millisecond)}
		if cfg.Vibes().SharePath != "" {
			re := regexp.MustCompile(`"instance":"([^"]+)".*sharing this token through vault`)
			daemontest.WaitFor(t, "tokend to log its instance", 5*time.Second, func() bool { return re.MatchString(d.Out.String()) })
			h.instance = re.FindStringSubmatch(d.Out.String())[1]
		}
		hosts = append(hosts, h)
	}
	return hosts
}

// entry reads the shared entry's fields.
func entry(v *daemontest.Vault) map[string]string {
	data := v.Call("GET", "secret/data/"+sharePath, nil)["data"].(map[string]any)["data"].(map[string]any)
	out := map[string]string{}
	for k, x := range data {
		out[k], _ = x.(string)
	}
	return out
}

// metric sums a token's series over hosts.
func metric(t *testing.T, hosts []*host, name string, labels ...string) float64 {
	var sum float64
	for _, h := range hosts {
		text, err := proto.Client{Path: h.Sock}.Metrics(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		v, ok := daemontest.ParseMetrics(t, string(text)).Value(name, append([]string{"token", "vibes"}, labels...)...)
		if !ok {
			t.Fatalf("no %s%v", name, labels)
		}
		sum += v
	}
	return sum
}

// sameToken waits until every host serves one token, and returns it.
func sameToken(t *testing.T, hosts []*host, within time.Duration) string {
	var tok string
	daemontest.WaitFor(t, "every host to serve the same token", within, func() bool {
		seen := map[string]bool{}
		for _, h := range hosts {
			v, err := proto.Client{Path: h.Sock}.Do(t.Context(), "TOKEN")
			if err != nil {
				return false
			}
			seen[v], tok = true, v
		}
		return len(seen) == 1
	})
	return tok
}

func TestE2ESharedToken(t *testing.T) {
	v, vaultToken := shareVault(t)
	sharedEP := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	aloneEP := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	for _, ep := range []*daemontest.Endpoint{sharedEP, aloneEP} {
		ep.SetTTL(10)
	}
	cfg := daemontest.OneToken(v.Addr, vaultToken, sharedEP.TokenURL())
	tc := cfg.Vibes()
	tc.MinRemaining, tc.RequestTimeout, tc.RetryMax = "500ms", "200ms", "1s"
	alone := cfg.Clone()
	alone.Vibes().TokenURL = aloneEP.TokenURL()
	tc.SharePath = sharePath

	// The eight shared hosts and the eight per-host ones run side by side
	// for 40 s, from the first one's start.
	start := time.Now()
	var hosts, baseline []*host
	for range 8 {
		hosts = append(hosts, startFleet(t, 1, cfg)...)
		baseline = append(baseline, startFleet(t, 1, alone)...)
	}
	time.Sleep(time.Until(start.Add(40 * time.Second)))
	shared, own := sharedEP.Calls.Load(), aloneEP.Calls.Load()
	t.Logf("token requests in 40 s with 10 s tokens: 8 sharing hosts %d, 8 hosts alone %d", shared, own)
	if shared > 5 {
		t.Errorf("the sharing hosts made %d token requests in 40 s, want at most 5", shared)
	}
	if own < 4*8 {
		t.Errorf("the hosts alone made %d token requests: the baseline is broken", own)
	}
	tok := sameToken(t, hosts, 5*time.Second)
	if e := entry(v); e["access_token"] != tok || e["token_type"] != "Bearer" || e["lease_holder"] != "" || e["failures"] != "0" {
		t.Errorf("the entry holds %v; the hosts serve %q", e, tok)
	}
	for _, h := range append(hosts, baseline...) {
		h.askers.Finish(t, "a host")
		h.NoLeaks("csecret")
	}
	if n := metric(t, hosts, "tokend_share_lease_acquired_total"); n != float64(sharedEP.Calls.Load()) {
		t.Errorf("%v leases for %d token requests: every request is made under a lease", n, sharedEP.Calls.Load())
	}
	if n := metric(t, hosts, "tokend_share_fallback_total"); n != 0 {
		t.Errorf("%v fallbacks with Vault and the endpoint up", n)
	}
	if n := metric(t, hosts, "tokend_share_reads_total", "result", "fresh"); n < 8 {
		t.Errorf("%v fresh reads: the hosts did not serve the shared token", n)
	}
}

// The lease holder dies during its request; then Vault stops for 15 s.
// 30 s tokens: the lease's slack (six request timeouts of 1 s) must fit
// in the quarter of a lifetime before which no host refreshes.
func TestE2ESharedTokenFailover(t *testing.T) {
	v, vaultToken := shareVault(t)
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep.SetTTL(30)
	cfg := daemontest.OneToken(v.Addr, vaultToken, ep.TokenURL())
	tc := cfg.Vibes()
	tc.MinRemaining, tc.RequestTimeout, tc.RetryMax = "1s", "1s", "1s"
	tc.SharePath = sharePath
	hosts := startFleet(t, 8, cfg)
	sameToken(t, hosts, 5*time.Second)

	// The endpoint hangs: the next lease holder's request stays in
	// flight, and it is killed there.
	first := entry(v)
	ep.Hold()
	var holder map[string]string
	daemontest.WaitFor(t, "a host to take the lease", 35*time.Second, func() bool {
		e := entry(v)
		if e["lease_holder"] != "" && e["access_token"] == first["access_token"] {
			holder = e
			return true
		}
		return false
	})
	var victim *host
	for i, h := range hosts {
		if h.instance == holder["lease_holder"] {
			victim = h
			h.askers.Finish(t, "the host about to be killed")
			syscall.Kill(h.Cmd.Process.Pid, syscall.SIGKILL)
			<-h.Done
			hosts = append(hosts[:i:i], hosts[i+1:]...)
			break
		}
	}
	if victim == nil {
		t.Fatalf("no host is %q", holder["lease_holder"])
	}
	killedAt := time.Now()
	ep.Release()
	// Another host takes over once the lease has expired.
	daemontest.WaitFor(t, "another host to refresh the token", 10*time.Second, func() bool {
		e := entry(v)
		return e["access_token"] != first["access_token"] && e["lease_holder"] == ""
	})
	after := entry(v)
	leaseUntil, _ := time.Parse(time.RFC3339Nano, holder["lease_until"])
	fetchedAt, _ := time.Parse(time.RFC3339Nano, after["fetched_at"])
	expiresAt, _ := time.Parse(time.RFC3339Nano, after["expires_at"])
	t.Logf("lease holder killed %s before its lease ran out; the next token was asked for %s after that, by %s",
		leaseUntil.Sub(killedAt).Round(time.Millisecond), fetchedAt.Sub(leaseUntil).Round(time.Millisecond), after["fetched_by"])
	if after["fetched_by"] == victim.instance || fetchedAt.Before(leaseUntil) {
		t.Errorf("after the kill: fetched by %s at %s; the dead holder's lease ran to %s", after["fetched_by"], fetchedAt, leaseUntil)
	}
	if tok := sameToken(t, hosts, 5*time.Second); tok != after["access_token"] {
		t.Errorf("the hosts serve %q, the entry holds %q", tok, after["access_token"])
	}
	if n := metric(t, hosts, "tokend_share_fallback_total"); n != 0 {
		t.Errorf("%v fallbacks: the takeover should have come through the lease", n)
	}

	// Vault stops (SIGSTOP: it keeps its data, and answers nothing) from
	// two seconds before the token falls due until past its end: every
	// host falls back to fetching for itself, and keeps serving.
	time.Sleep(time.Until(expiresAt.Add(-9 * time.Second)))
	before := ep.Calls.Load()
	syscall.Kill(v.Proc.Cmd.Process.Pid, syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(v.Proc.Cmd.Process.Pid, syscall.SIGCONT)
		}
	}()
	time.Sleep(15 * time.Second)
	syscall.Kill(v.Proc.Cmd.Process.Pid, syscall.SIGCONT)
	stopped = false
	fallbacks := metric(t, hosts, "tokend_share_fallback_total")
	t.Logf("Vault stopped 15 s: %v fallbacks, %d token requests", fallbacks, ep.Calls.Load()-before)
	if fallbacks < float64(len(hosts)) {
		t.Errorf("%v fallbacks across %d hosts in 15 s without Vault, want each to fetch for itself", fallbacks, len(hosts))
	}
	// Vault is back: at their next due point the hosts share one token again.
	tok := sameToken(t, hosts, 35*time.Second)
	if e := entry(v); e["access_token"] != tok {
		t.Errorf("after Vault came back the hosts serve %q, the entry holds %q", tok, e["access_token"])
	}
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() { defer wg.Done(); h.askers.Finish(t, fmt.Sprintf("host %s", h.instance)) }()
		if !strings.Contains(h.Out.String(), "sharing the token again") {
			t.Errorf("host %s did not log its return to sharing", h.instance)
		}
		h.NoLeaks("csecret")
	}
	wg.Wait()
}

// A host that can write the shared entry (every sharing host can) forges
// an endless lease with a failure and no token: a freshly started host,
// real binary and real Vault, still gets a token from the endpoint at
// once, and its token replaces the forgery.
func TestE2ESharedForgedLease(t *testing.T) {
	v, vaultToken := shareVault(t)
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	cfg := daemontest.OneToken(v.Addr, vaultToken, ep.TokenURL())
	cfg.Vibes().SharePath = sharePath
	first := startFleet(t, 1, cfg)
	sameToken(t, first, 10*time.Second)
	fingerprint := entry(v)["config"]
	first[0].askers.Finish(t, "the first host")
	first[0].Stop(t, 5*time.Second)

	v.Call("POST", "secret/data/"+sharePath, map[string]any{"data": map[string]string{
		"config": fingerprint, "lease_holder": "evil/1", "lease_until": "9999-01-01T00:00:00Z", "failures": "1", "last_error": "forged"}})
	before := ep.Calls.Load()
	fresh := startFleet(t, 1, cfg)
	tok := sameToken(t, fresh, 10*time.Second)
	if !ep.IssuedSince(int(before), tok) {
		t.Errorf("the fresh host serves %q, not a token the endpoint issued after the forgery", tok)
	}
	if e := entry(v); e["access_token"] != tok || e["lease_holder"] != "" || e["failures"] != "0" {
		t.Errorf("the entry after the fresh host's request: %v", e)
	}
	fresh[0].askers.Finish(t, "the fresh host")
}
