package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
)

// Serving a token (registry, allow lists, keeper) allocates nothing: with
// the socket server's zero, a kept-alive TOKEN costs no garbage at all.
func TestTokenAllocs(t *testing.T) {
	if daemontest.Race {
		t.Skip("the race detector allocates on its own; .ci/test runs this test without it too")
	}
	k := newKeeper(config.Fetch{Name: "vibes", MinRemaining: time.Minute}, keeperDeps{log: zerolog.Nop()})
	k.tok.Store(&server.Token{Name: "vibes", Type: "Bearer", Value: "v", ExpiresAt: time.Now().Add(time.Hour)})
	d := &daemon{}
	d.reg.Store(&registry{def: "vibes", names: []string{"vibes"},
		entries: map[string]*entry{"vibes": {k: k, access: config.Access{GIDs: []uint32{2000}}}}})
	ctx := context.Background()
	peer := server.Peer{UID: 1000, GID: 1000, Groups: []uint32{3000, 2000}}
	for _, name := range []string{"", "vibes"} {
		n := testing.AllocsPerRun(1000, func() {
			if tok, err := d.Token(ctx, server.Query{Name: name, Wait: time.Second}, peer); err != nil || tok.Value != "v" {
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
