package tokens

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/vaultsrc"
)

// After a suspend longer than the token's life, the keeper serves no
// expired token and refreshes at once, rather than when its timer (which
// counted no suspended time) fires.
func TestKeeperSuspend(t *testing.T) {
	r := startKeeper(t, "basic+body")
	d := r.clock.nextWait(t) // an hour's token; the next refresh in ~46 minutes
	first := r.ep.LastToken()
	r.ep.Hold()
	r.clock.Suspend(2 * time.Hour)
	_, err := r.get(t)
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeUnavailable {
		t.Fatalf("after the suspend: %v, want unavailable (the token expired an hour ago)", err)
	}
	r.ep.Release()
	// The refresh started at the jump, not d later.
	if w := r.clock.nextWait(t); w < 40*time.Minute {
		t.Fatalf("after the jump the keeper slept %v: no fresh token", w)
	}
	if tok, err := r.get(t); err != nil || tok.Value == first {
		t.Fatalf("after the suspend: %q, %v; want a new token without waiting %v", tok.Value, err, d)
	}
}

// skewClock is the real clock with its wall clock moved ahead: what a
// machine sees after a suspend, when the monotonic clock did not count it.
type skewClock struct {
	realClock
	ahead atomic.Int64 // ns
}

func (c *skewClock) Wall() time.Time { return time.Now().Round(0).Add(time.Duration(c.ahead.Load())) }

// A token is servable only while both clocks say it has min_remaining
// left: on the monotonic clock alone, one that expired during a suspend
// would still look fresh.
func TestKeeperServableOnBothClocks(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "client-1", "s")
	clock := &skewClock{}
	k := New(*tokenConfig(ep.TokenURL(), "basic+body"), Deps{Creds: &fakeVault{creds: vaultsrc.Credentials{ID: "client-1", Secret: "s"}}, clock: clock, Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go k.Run(ctx)
	tok, err := k.Get(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(tok.ExpiresAt) < 50*time.Minute {
		t.Fatalf("token has %v", time.Until(tok.ExpiresAt))
	}
	clock.ahead.Store(int64(2 * time.Hour)) // the machine slept two hours
	if _, err := k.Get(ctx, 0); err == nil {
		t.Fatal("served a token the wall clock says expired an hour ago")
	}
	if s := k.Snapshot(time.Now()); s.Servable {
		t.Error("STATUS calls it servable")
	}
}
