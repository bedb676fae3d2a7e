package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/daemon/tokens"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
	"github.com/tokend/tokend/vaultsrc"
)

// Serving a token (registry, allow lists, keeper) allocates nothing: with
// the socket server's zero, a kept-alive TOKEN costs no garbage at all.
func TestTokenAllocs(t *testing.T) {
	if daemontest.Race {
		t.Skip("the race detector allocates on its own; .ci/test runs this test without it too")
	}
	// A keeper with its first token from a stand-in endpoint.
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	k := tokens.New(config.Fetch{Name: "vibes", TokenURL: ep.TokenURL(), Scope: daemontest.RBMScope, ClientAuth: "basic+body", MinRemaining: time.Minute,
		RetryMax: time.Second, RequestTimeout: 5 * time.Second, MaxPerHour: 100, Secret: vaultsrc.Secret{Path: "p"}},
		tokens.Deps{Creds: fixedCreds{ID: "cid", Secret: "csecret"}, Log: zerolog.Nop()})
	kctx, stop := context.WithCancel(context.Background())
	defer stop()
	go k.Run(kctx)
	if _, err := k.Get(kctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	v := ep.LastToken()
	d := &daemon{}
	d.reg.Store(&registry{def: "vibes", names: []string{"vibes"},
		entries: map[string]*entry{"vibes": {k: k, access: config.Access{GIDs: []uint32{2000}}}}})
	ctx := context.Background()
	peer := server.Peer{UID: 1000, GID: 1000, Groups: []uint32{3000, 2000}}
	for _, name := range []string{"", "vibes"} {
		n := testing.AllocsPerRun(1000, func() {
			if tok, err := d.Token(ctx, server.Query{Name: name, Wait: time.Second}, peer); err != nil || tok.Value != v {
				t.Fatalf("Token(%q): %v", name, err)
			}
		})
		if n > 0 {
			t.Errorf("Token(%q): %.1f allocations, want 0", name, n)
		}
	}
	// And counting it: the socket server calls the meter for every answer.
	m := newMetrics(d.tokenStates, func() int64 { return 0 })
	if n := testing.AllocsPerRun(1000, func() { m.Request(proto.VerbToken, "ok") }); n > 0 {
		t.Errorf("metrics.Request: %.1f allocations, want 0", n)
	}
}

// BenchmarkMeter is what counting one answer costs the read path.
func BenchmarkMeter(b *testing.B) {
	m := newMetrics(func(time.Time) []tokenState { return nil }, func() int64 { return 0 })
	b.ReportAllocs()
	for b.Loop() {
		m.Request(proto.VerbToken, "ok")
	}
}

// fixedCreds is a credential source that always has the same answer.
type fixedCreds vaultsrc.Credentials

func (c fixedCreds) Read(context.Context, vaultsrc.Secret) (vaultsrc.Credentials, error) {
	return vaultsrc.Credentials(c), nil
}
