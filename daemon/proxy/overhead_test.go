package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
)

// staticTokens serves one token to everyone.
type staticTokens struct{ server.Tokens }

func (staticTokens) Token(ctx context.Context, q server.Query, p server.Peer) (server.Token, error) {
	return proto.Token{Name: "api", Type: "Bearer", Value: "tok", ExpiresAt: time.Now().Add(time.Hour)}, nil
}

// TestProxyOverhead measures the proxy against the API called directly,
// in one run: keep-alive clients, requests per second and p99. It
// reports; it asserts only that the proxy works and is not absurdly slow
// (timing assertions on a shared machine are flaky).
//
//	go test -run TestProxyOverhead -v ./daemon/proxy/
func TestProxyOverhead(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED: the overhead measurement runs without -short")
	}
	payload := make([]byte, 1024)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			w.WriteHeader(401)
		}
		w.Write(payload)
	}))
	defer api.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := New(config.Proxy{Name: "api", Token: "api", Listen: ln.Addr().String(), Upstream: api.URL},
		Deps{Tokens: staticTokens{}, Log: zerolog.Nop(), IdleTimeout: 30 * time.Second})
	go p.Serve(ln)
	defer p.Shutdown(context.Background())

	const clients, each = 8, 2 * time.Second
	// The direct client sends the token itself, as a program that held
	// one would.
	measure := func(url, auth string) (rps float64, p99 time.Duration) {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		end := time.Now().Add(each)
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
				var mine []time.Duration
				for time.Now().Before(end) {
					start := time.Now()
					req, _ := http.NewRequest("GET", url, nil)
					if auth != "" {
						req.Header.Set("Authorization", auth)
					}
					resp, err := hc.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Errorf("%s: %d", url, resp.StatusCode)
						return
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		slices.Sort(lat)
		if len(lat) == 0 {
			t.Fatal("no request answered")
		}
		return float64(len(lat)) / each.Seconds(), lat[len(lat)*99/100]
	}
	direct, directP99 := measure(api.URL+"/x", "Bearer tok")
	proxied, proxiedP99 := measure("http://"+ln.Addr().String()+"/x", "")
	t.Logf("%d keep-alive clients, 1 KiB answers, %s each, GOMAXPROCS %d:\n  direct   %8.0f req/s  p99 %s\n  proxied  %8.0f req/s  p99 %s\n  ratio    %8.2f        p99 +%s",
		clients, each, runtime.GOMAXPROCS(0), direct, directP99.Round(time.Microsecond), proxied, proxiedP99.Round(time.Microsecond),
		proxied/direct, (proxiedP99 - directP99).Round(time.Microsecond))
	if proxied < direct/20 {
		t.Errorf("the proxy answers %.0f req/s, under a twentieth of direct (%.0f)", proxied, direct)
	}
}
