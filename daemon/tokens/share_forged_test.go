package tokens

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/vaultsrc"
)

// The shared entry is untrusted input: any host that shares it can write
// anything there, or have a clock far ahead. These are the forgeries an
// adversarial review made against a real Vault, each replayed against the
// sharer's own step. forge writes fields over what the store holds, as
// another host with write access would, keeping the entry's version.
func forge(store *memStore, fields map[string]string) {
	f := map[string]string{}
	for k, v := range store.fields {
		f[k] = v
	}
	for k, v := range fields {
		f[k] = v
	}
	store.fields = f
	store.version++
}

// A lease in 9999 is no lease: the host takes its own at the due point and
// asks the endpoint, whatever failures the entry claims.
func TestShareForgedEndlessLease(t *testing.T) {
	for _, failures := range []string{"0", "1"} {
		store := &memStore{}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		me := newTestSharer("me", store, func() time.Time { return now })
		mine := me.step(now, nil, false).tok
		if mine == nil || me.fetches != 1 {
			t.Fatalf("first token: %+v", mine)
		}
		forge(store, map[string]string{"lease_holder": "evil/1", "lease_until": "9999-01-01T00:00:00Z", "failures": failures, "last_error": "forged"})
		now = me.policy.due(*mine).Add(time.Second)
		r := me.step(now, mine, false)
		if !r.fetched || r.err != nil || r.tok == nil || me.fetches != 2 {
			t.Errorf("failures=%s: at the due point: %+v, %d fetches; want this host to take the lease and fetch", failures, r, me.fetches)
		}
	}
}

// A forged lease that is renewed before every read, within the bounds a
// real one has, and claims failures: the host waits for the fleet's
// backoff no longer than its own fallback point, then asks the endpoint
// itself, before its token falls under min_remaining.
func TestShareForgedRenewedLease(t *testing.T) {
	store := &memStore{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	me := newTestSharer("me", store, func() time.Time { return now })
	mine := me.step(now, nil, false).tok
	now = me.policy.due(*mine)
	last := mine.ExpiresAt.Add(-me.policy.minRemaining - me.policy.timeout)
	for i := 0; ; i++ {
		forge(store, map[string]string{"lease_holder": "evil/1", "lease_until": now.Add(20 * time.Second).Format(time.RFC3339Nano), "failures": "3", "last_error": "forged"})
		r := me.step(now, mine, false)
		if r.fetched {
			if now.After(last) || r.tok == nil {
				t.Fatalf("fetched at %s before expiry, after the last point %s: %+v", mine.ExpiresAt.Sub(now), mine.ExpiresAt.Sub(last), r)
			}
			break
		}
		if r.next.After(last) || !r.next.After(now) {
			t.Fatalf("step %d at %s before expiry: next %s before expiry, past the last point %s", i, mine.ExpiresAt.Sub(now), mine.ExpiresAt.Sub(r.next), mine.ExpiresAt.Sub(last))
		}
		if i > 1000 {
			t.Fatal("never fetched")
		}
		now = r.next
	}
	// It shared the token it got: the fleet's backoff is over.
	if e := parseShared(store.fields); e.Failures != 0 || e.FetchedBy != "me" {
		t.Errorf("entry after the fallback: %+v", e)
	}
}

// A host without a token does not wait for a lease holder's token longer
// than one lease: a forged lease renewed forever, with or without
// failures, cannot keep a freshly started host from asking.
func TestShareForgedLeaseFreshHost(t *testing.T) {
	for _, failures := range []string{"0", "2"} {
		store := &memStore{}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		me := newTestSharer("me", store, func() time.Time { return now })
		start := now
		var got *shared
		for i := 0; i < 1000 && got == nil; i++ {
			forge(store, map[string]string{"lease_holder": "evil/1", "lease_until": now.Add(20 * time.Second).Format(time.RFC3339Nano), "failures": failures, "config": "cfg"})
			r := me.step(now, nil, false)
			got = r.tok
			if got == nil {
				now = r.next
			}
		}
		if got == nil || me.fetches != 1 || now.Sub(start) > me.policy.noTokenWait() {
			t.Errorf("failures=%s: token %v after %s (%d fetches); want one fetch within %s", failures, got, now.Sub(start), me.fetches, me.policy.noTokenWait())
		}
	}
}

// What the entry says about its token passes the checks an endpoint's
// answer does: one printable word, a type that is one word, a fingerprint
// present and equal; its lifetime is capped; the scope served is the
// host's own.
func TestShareForgedToken(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	good := map[string]string{"access_token": "good", "token_type": "Bearer", "scope": "s", "config": "cfg", "fetched_by": "other",
		"fetched_at": now.Add(-time.Minute).Format(time.RFC3339Nano), "expires_at": now.Add(time.Hour).Format(time.RFC3339Nano)}
	with := func(k, v string) map[string]string {
		f := map[string]string{}
		for a, b := range good {
			f[a] = b
		}
		f[k] = v
		return f
	}
	for _, c := range []struct {
		name   string
		fields map[string]string
	}{
		{"a line break in the token", with("access_token", "EVIL\nOK injected-line\r\nX")},
		{"a space in the token", with("access_token", "two words")},
		{"a header in the type", with("token_type", "Bearer\r\nX-Injected: 1")},
		{"no fingerprint", with("config", "")},
		{"another fingerprint", with("config", "other")},
		{"fetched in the future", with("fetched_at", now.Add(time.Hour).Format(time.RFC3339Nano))},
	} {
		store := &memStore{}
		forge(store, c.fields)
		me := newTestSharer("me", store, func() time.Time { return now })
		r := me.step(now, nil, false)
		if r.tok != nil && r.tok.Token != "me-tok1" {
			t.Errorf("%s: served %q", c.name, r.tok.Token)
		}
	}

	// A good one is served, with this host's scope whatever the entry's.
	store := &memStore{}
	forge(store, with("scope", "admin\nOK x"))
	me := newTestSharer("me", store, func() time.Time { return now })
	if r := me.step(now, nil, false); r.tok == nil || r.tok.Token != "good" || r.tok.Scope != "s" {
		t.Errorf("a good entry: %+v", r.tok)
	}

	// expires_at in 9999 is capped at a day, before this host has been
	// given a token of its own; after, at the longest it was given.
	store = &memStore{}
	forge(store, with("expires_at", "9999-12-31T00:00:00Z"))
	me = newTestSharer("me", store, func() time.Time { return now })
	r := me.step(now, nil, false)
	if r.tok == nil || r.tok.ExpiresAt.Sub(r.tok.FetchedAt) != maxSharedLifetime || !r.next.Before(r.tok.ExpiresAt) {
		t.Fatalf("expires_at 9999: %+v, next %s", r.tok, r.next)
	}
	me.gave(time.Hour)
	if e := me.vet(now, parseShared(store.fields)); e.ExpiresAt.Sub(e.FetchedAt) != time.Hour {
		t.Errorf("after a 1h token of its own: lifetime %s", e.ExpiresAt.Sub(e.FetchedAt))
	}
	// The texts STATUS shows are one clean line.
	e := me.vet(now, parseShared(with("last_error", "x\nREADY=1")))
	if strings.ContainsAny(e.LastError, "\r\n") {
		t.Errorf("last_error %q", e.LastError)
	}
}

// Tokens too short for the shared schedule: after its first token, the
// host fetches on its own schedule (as available as alone), and reads the
// entry no more while they stay so short.
func TestKeeperShortTokensFetchAlone(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "pw")
	ep.SetTTL(10)
	clock := newFakeClock()
	store := &memStore{}
	cfg := tokenConfig(ep.TokenURL(), "basic+body")
	cfg.SharePath, cfg.ShareMount = "tokend/shared/vibes", "secret"
	cfg.MinRemaining, cfg.RequestTimeout = 2*time.Second, time.Second
	logs := &daemontest.SyncBuf{}
	deps := testDeps(&fakeVault{creds: vaultsrc.Credentials{ID: "cid", Secret: "pw"}}, clock, zerolog.New(logs))
	deps.ShareID, deps.ShareStore = "me", store
	k := New(*cfg, deps)
	k.attempt(context.Background()) // the first token, through the entry
	reads := store.reads
	for range 5 {
		wait := k.attempt(context.Background())
		if wait > 8*time.Second {
			t.Fatalf("next attempt in %v: past the per-host refresh point of a 10 s token", wait)
		}
		clock.Advance(wait)
		if !k.Snapshot(clock.Now()).Servable {
			t.Fatalf("unservable at %v", clock.Now())
		}
	}
	if store.reads != reads || ep.Calls.Load() != 6 {
		t.Errorf("%d entry reads and %d token requests after the first; want none and 5 of its own", store.reads-reads, ep.Calls.Load()-1)
	}
	if n := strings.Count(logs.String(), "tokens are too short to share"); n != 1 {
		t.Errorf("said %d times that the tokens are too short to share, want once:\n%s", n, logs)
	}
}
