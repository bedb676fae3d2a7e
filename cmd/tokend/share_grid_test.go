package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// TestE2ESharedGrid holds sharing to its promise on real processes: a
// host that shares is at least as available as one alone, whatever the
// tokens' lifetime, min_remaining and request_timeout. Each cell runs
// three sharing hosts and three alone side by side, against endpoints
// that take 30 % of request_timeout (at most 300 ms) to answer, with a
// client per host asking every 200 ms from the host's first token on.
// The first two cells are the case that made sharing less available
// (10 s tokens, min_remaining 2s: 521 and 17 requests unavailable); the
// daemon/tokens fleet grid covers many more settings without latency.
func TestE2ESharedGrid(t *testing.T) {
	v := daemontest.StartVault(t)
	v.PutSecret("tokend/vibes", "cid", "csecret")
	v.Call("PUT", "sys/policies/acl/tokend-grid", map[string]any{"policy": `
path "secret/data/tokend/vibes" { capabilities = ["read"] }
path "secret/data/tokend/shared/*" { capabilities = ["read", "create", "update"] }
`})
	vaultToken := v.Call("POST", "auth/token/create", map[string]any{"policies": []string{"tokend-grid"}, "ttl": "1h"})["auth"].(map[string]any)["client_token"].(string)
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	os.WriteFile(tokenFile, []byte(vaultToken), 0o644)

	cells := []struct {
		lifetime              int // seconds
		minRemaining, timeout time.Duration
	}{
		{10, 2 * time.Second, 10 * time.Second}, // the reported case, default request_timeout: too short to share
		{10, 2 * time.Second, time.Second},      // the reported case with request_timeout 1s: too short to share
		{6, time.Second, 500 * time.Millisecond},
		{8, 500 * time.Millisecond, 200 * time.Millisecond}, // shared: a quarter of the life (2 s) > 0.5 s + 6 × 0.2 s
		{16, time.Second, 500 * time.Millisecond},           // shared, on the edge: 4 s = 1 s + 6 × 0.5 s
		{20, time.Second, 500 * time.Millisecond},           // shared
	}
	const asking = 30 * time.Second
	for i, c := range cells {
		fits := time.Duration(c.lifetime)*time.Second/4 >= c.minRemaining+6*c.timeout
		name := fmt.Sprintf("lifetime=%ds,min_remaining=%s,request_timeout=%s", c.lifetime, c.minRemaining, c.timeout)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sharedEP := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
			aloneEP := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
			for _, ep := range []*daemontest.Endpoint{sharedEP, aloneEP} {
				ep.SetTTL(c.lifetime)
				ep.SetDelay(min(c.timeout*3/10, 300*time.Millisecond))
			}
			cfg := daemontest.OneToken(v.Addr, tokenFile, sharedEP.TokenURL())
			tc := cfg.Vibes()
			tc.MinRemaining, tc.RequestTimeout, tc.RetryMax = c.minRemaining.String(), c.timeout.String(), "1s"
			alone := cfg.Clone()
			alone.Vibes().TokenURL = aloneEP.TokenURL()
			tc.SharePath = fmt.Sprintf("tokend/shared/grid%d", i)

			var sharedHosts, aloneHosts []*daemontest.Tokend
			for range 3 {
				sharedHosts = append(sharedHosts, daemontest.StartTokend(t, cfg.Clone()))
				aloneHosts = append(aloneHosts, daemontest.StartTokend(t, alone.Clone()))
			}
			until := time.Now().Add(asking + 10*time.Second)
			shared, own := askUntil(sharedHosts, until), askUntil(aloneHosts, until)
			shared.wg.Wait()
			own.wg.Wait()
			t.Logf("%s: sharing hosts %d answered, %d unavailable (%s), %d token requests; hosts alone %d answered, %d unavailable (%s), %d token requests",
				name, shared.ok.Load(), shared.failed.Load(), shared.first(), sharedEP.Calls.Load(), own.ok.Load(), own.failed.Load(), own.first(), aloneEP.Calls.Load())
			if shared.failed.Load() > own.failed.Load() {
				t.Errorf("sharing hosts had %d requests unavailable, hosts alone %d: sharing made hosts less available", shared.failed.Load(), own.failed.Load())
			}
			if shared.ok.Load() < 3*int32(asking/(200*time.Millisecond))/2 {
				t.Errorf("only %d requests answered on the sharing hosts: the clients did not run", shared.ok.Load())
			}
			tooShort := 0
			for _, d := range sharedHosts {
				if strings.Contains(d.Out.String(), "tokens are too short to share") {
					tooShort++
				}
				d.NoLeaks("csecret")
			}
			switch {
			case fits && tooShort > 0:
				t.Errorf("%d hosts found tokens too short to share, with a quarter of the life above min_remaining and 6 request timeouts", tooShort)
			case fits && sharedEP.Calls.Load() >= aloneEP.Calls.Load():
				t.Errorf("the sharing hosts made %d token requests, the hosts alone %d: they did not share", sharedEP.Calls.Load(), aloneEP.Calls.Load())
			case !fits && tooShort != len(sharedHosts):
				t.Errorf("%d of %d sharing hosts said the tokens are too short to share", tooShort, len(sharedHosts))
			}
		})
	}
}

// gridAnswers counts a fleet's answers.
type gridAnswers struct {
	ok, failed atomic.Int32
	firstErr   atomic.Value
	wg         sync.WaitGroup
}

func (a *gridAnswers) first() string {
	if s, ok := a.firstErr.Load().(string); ok {
		return "first: " + s
	}
	return "none"
}

// askUntil asks each host for its token every 200 ms, from the host's
// first token until the deadline, and counts the answers (done at
// a.wg.Wait).
func askUntil(hosts []*daemontest.Tokend, until time.Time) *gridAnswers {
	a := &gridAnswers{}
	for _, d := range hosts {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			c := proto.Client{Path: d.Sock, Timeout: 5 * time.Second}
			first := time.Now().Add(20 * time.Second)
			for time.Now().Before(first) {
				if _, err := c.Do(context.Background(), "TOKEN"); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			for time.Now().Before(until) {
				if _, err := c.Do(context.Background(), "TOKEN"); err != nil {
					a.failed.Add(1)
					a.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					a.ok.Add(1)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	return a
}
