package tokens

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/daemon/oauth"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/vaultsrc"
)

// memStore is a KV v2 entry with Vault's check-and-set rules, for the
// sharer's tests and the fleet simulation.
type memStore struct {
	fields  map[string]string
	version int
	down    bool
	reads   int
	writes  int
}

func (m *memStore) ReadEntry(ctx context.Context, mount, path string) (map[string]string, int, error) {
	m.reads++
	if m.down {
		return nil, 0, errors.New("vault unreachable")
	}
	f := make(map[string]string, len(m.fields))
	for k, v := range m.fields {
		f[k] = v
	}
	return f, m.version, nil
}

func (m *memStore) WriteEntry(ctx context.Context, mount, path string, fields map[string]string, cas int) (int, error) {
	m.writes++
	if m.down {
		return 0, errors.New("vault unreachable")
	}
	if cas != m.version {
		return 0, fmt.Errorf("writing %s/%s: %w", mount, path, vaultsrc.ErrConflict)
	}
	m.fields, m.version = fields, m.version+1
	return m.version, nil
}

// testSharer is a sharer on store with a fixed jitter and counted metrics.
type testSharer struct {
	*sharer
	reads             map[string]int
	leases, fallbacks int
	fetches           int
	fetchErr          error
	lifetime          time.Duration
	clockNow          func() time.Time
}

func newTestSharer(id string, store EntryStore, now func() time.Time) *testSharer {
	ts := &testSharer{reads: map[string]int{}, lifetime: time.Hour, clockNow: now}
	ts.sharer = &sharer{mount: "secret", path: "tokend/shared/vibes", id: id, config: "cfg", scope: "s",
		policy: newSharePolicy(time.Minute, 10*time.Second, 30*time.Second),
		store:  store, rand: func() float64 { return 0.5 }, jitter: 0.5, log: zerolog.Nop(),
		obs: ts}
	return ts
}

// testSharer counts what its sharer does.
func (ts *testSharer) Attempted()                    {}
func (ts *testSharer) Fetched(string, time.Duration) {}
func (ts *testSharer) ShareRead(r string)            { ts.reads[r]++ }
func (ts *testSharer) ShareLeased()                  { ts.leases++ }
func (ts *testSharer) FellBack()                     { ts.fallbacks++ }

func (ts *testSharer) fetch(ctx context.Context, cached bool) (oauth.Grant, time.Time, error) {
	ts.fetches++
	if ts.fetchErr != nil {
		return oauth.Grant{}, ts.clockNow(), ts.fetchErr
	}
	return oauth.Grant{AccessToken: fmt.Sprintf("%s-tok%d", ts.id, ts.fetches), TokenType: "Bearer", Lifetime: ts.lifetime}, ts.clockNow(), nil
}

func (ts *testSharer) step(now time.Time, mine *shared, forced bool) shareResult {
	return ts.sharer.step(context.Background(), now, mine, forced, ts.fetch)
}

func TestSharePolicy(t *testing.T) {
	p := newSharePolicy(time.Minute, 10*time.Second, 30*time.Second)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tok := shared{FetchedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	// Late: 60 s min_remaining and 6 request timeouts before the end.
	if got, want := p.due(tok), t0.Add(time.Hour-2*time.Minute); !got.Equal(want) {
		t.Errorf("due of a 1h token = %s, want %s", got.Sub(t0), want.Sub(t0))
	}
	// Never earlier than one host would refresh: a 3-minute token is due
	// at 75% of its life, not after it fell under min_remaining.
	short := shared{FetchedAt: t0, ExpiresAt: t0.Add(3 * time.Minute)}
	if got := p.due(short).Sub(t0); got != refreshAfter(3*time.Minute, time.Minute, 10*time.Second, 0) {
		t.Errorf("due of a 3m token = %s", got)
	}
	// The fallback window lies after a dead lease holder's lease and
	// another host's request, and before min_remaining with one request.
	due := p.due(tok)
	takeover := due.Add(shareLease*p.timeout + 2*p.timeout) // the lease, a re-read, a request
	for _, rnd := range []float64{0, 0.5, 0.999} {
		fb := p.fallbackAt(tok, rnd)
		last := tok.ExpiresAt.Add(-p.minRemaining - p.timeout)
		if fb.Before(takeover) || fb.After(last) {
			t.Errorf("fallbackAt(%v) = %s before the end; want between %s and %s", rnd, tok.ExpiresAt.Sub(fb), tok.ExpiresAt.Sub(takeover), tok.ExpiresAt.Sub(last))
		}
		if ta := p.troubleAt(tok, rnd); ta.Before(due) || ta.After(last) {
			t.Errorf("troubleAt(%v) = %s before the end; want between the due point and %s", rnd, tok.ExpiresAt.Sub(ta), tok.ExpiresAt.Sub(last))
		}
	}
}

func TestShareEntryRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 123456789, time.UTC)
	in := shared{Token: "at", Type: "Bearer", Scope: "s", FetchedAt: t0, ExpiresAt: t0.Add(time.Hour), FetchedBy: "h/1",
		Config: "c", LeaseHolder: "h/2", LeaseUntil: t0.Add(20 * time.Second)}
	if out := parseShared(in.fields()); out != in {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
	// A token whose times do not parse, or that expires before it was
	// fetched, is no token.
	f := in.fields()
	f["expires_at"] = "soon"
	if out := parseShared(f); out.Token != "" {
		t.Errorf("unparsable expires_at: token %q kept", out.Token)
	}
	f = in.fields()
	f["expires_at"] = f["fetched_at"]
	if out := parseShared(f); out.Token != "" {
		t.Errorf("zero lifetime: token %q kept", out.Token)
	}
}

func TestShareOneFetchesOthersRead(t *testing.T) {
	store := &memStore{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a, b := newTestSharer("a", store, clock), newTestSharer("b", store, clock)

	ra := a.step(now, nil, false)
	if ra.tok == nil || !ra.fetched || a.leases != 1 {
		t.Fatalf("first host: %+v, leases %d; want a fetched token", ra, a.leases)
	}
	rb := b.step(now.Add(time.Second), nil, false)
	if rb.tok == nil || rb.fetched || rb.tok.Token != ra.tok.Token || b.fetches != 0 {
		t.Fatalf("second host: %+v, %d fetches; want a's token read from the entry", rb, b.fetches)
	}
	if e := parseShared(store.fields); e.LeaseHolder != "" || e.FetchedBy != "a" {
		t.Errorf("entry after the refresh: holder %q, fetched by %q", e.LeaseHolder, e.FetchedBy)
	}
	// At b's next read the token is due: b refreshes it, and a reads b's.
	now = rb.next
	rb2 := b.step(now, rb.tok, false)
	if !rb2.fetched || rb2.tok == nil || b.leases != 1 {
		t.Fatalf("b at the due point: %+v", rb2)
	}
	ra2 := a.step(ra.next, ra.tok, false)
	if ra2.tok == nil || ra2.tok.Token != rb2.tok.Token || a.fetches != 1 {
		t.Fatalf("a at its read point: %+v (%d fetches); want b's token", ra2, a.fetches)
	}
	if a.reads[shareFresh] != 1 || b.reads[shareFresh] != 1 || a.reads[shareDue] != 1 || b.reads[shareDue] != 1 {
		t.Errorf("reads: a %v, b %v", a.reads, b.reads)
	}
}

func TestShareLeaseHolderDies(t *testing.T) {
	store := &memStore{}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	a, b := newTestSharer("a", store, clock), newTestSharer("b", store, clock)
	first := a.step(now, nil, false)
	mine := first.tok
	b.step(now, nil, false)

	// a takes the lease at the due point and dies during its request: the
	// lease stays in the entry.
	now = a.policy.due(*mine)
	lease := parseShared(store.fields)
	lease.LeaseHolder, lease.LeaseUntil = "a", now.Add(shareLease*a.policy.timeout)
	store.fields, store.version = lease.fields(), store.version+1

	// b waits, serving its token, until the lease expires; then takes it.
	for i := 0; ; i++ {
		now = now.Add(time.Second)
		r := b.step(now, mine, false)
		if r.fetched {
			if r.err != nil || r.tok == nil || b.fallbacks != 0 || b.leases != 1 {
				t.Fatalf("b's takeover: %+v, %d fallbacks, %d leases", r, b.fallbacks, b.leases)
			}
			if now.Before(lease.LeaseUntil) {
				t.Fatalf("b fetched at %s, before a's lease ran out at %s", now, lease.LeaseUntil)
			}
			if left := mine.ExpiresAt.Sub(now); left < a.policy.minRemaining {
				t.Fatalf("takeover came with %s left, under min_remaining", left)
			}
			break
		}
		if r.tok != nil || r.next.IsZero() || b.reads[shareLeased] == 0 || i > 60 {
			t.Fatalf("b while a holds the lease: %+v, reads %v", r, b.reads)
		}
	}
}

func TestShareVaultDownFallsBack(t *testing.T) {
	store := &memStore{}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	a := newTestSharer("a", store, clock)
	mine := a.step(now, nil, false).tok

	store.down = true
	now = a.policy.due(*mine)
	var r shareResult
	reads := 0
	for steps := 0; ; steps++ {
		reads = store.reads
		r = a.step(now, mine, false)
		if r.fetched || steps > 100 {
			break
		}
		if r.tok != nil || !r.next.After(now) {
			t.Fatalf("waiting out a Vault outage: %+v", r)
		}
		now = r.next
	}
	if !r.fetched || r.err != nil || a.fallbacks != 1 {
		t.Fatalf("with Vault down: %+v, %d fallbacks; want a token fetched for this host", r, a.fallbacks)
	}
	if store.reads != reads {
		t.Errorf("the step that fell back read the entry first: a Vault that hangs would have held it for its timeout")
	}
	if now.Before(a.policy.troubleAt(*mine, a.jitter)) || mine.ExpiresAt.Sub(now) < a.policy.minRemaining+a.policy.timeout {
		t.Errorf("fell back %s before the end: want at its point in the window from the due point to one request before min_remaining", mine.ExpiresAt.Sub(now))
	}
	// Vault is back: the host offers its fresher token to the others.
	store.down = false
	own := *r.tok
	r2 := a.step(now.Add(time.Minute), &own, false)
	if e := parseShared(store.fields); e.Token != own.Token || r2.fetched {
		t.Errorf("after Vault came back the entry holds %q, want the host's own %q; result %+v", e.Token, own.Token, r2)
	}
}

func TestShareForeignEntry(t *testing.T) {
	store := &memStore{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a, b := newTestSharer("a", store, clock), newTestSharer("b", store, clock)
	b.config = "other"
	a.step(now, nil, false)
	r := b.step(now, nil, false)
	if r.tok == nil || !r.fetched || b.reads[shareMismatch] != 1 || b.fallbacks != 1 {
		t.Fatalf("a host with another configuration: %+v, reads %v; want its own token, not the entry's", r, b.reads)
	}
	if e := parseShared(store.fields); e.FetchedBy != "a" {
		t.Errorf("the foreign host wrote the entry: fetched by %q", e.FetchedBy)
	}
}

func TestShareForcedGoesThroughLease(t *testing.T) {
	store := &memStore{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a, b := newTestSharer("a", store, clock), newTestSharer("b", store, clock)
	mineA := a.step(now, nil, false).tok
	mineB := b.step(now, nil, false).tok
	now = now.Add(10 * time.Minute)
	r := a.step(now, mineA, true)
	if !r.fetched || a.leases != 2 {
		t.Fatalf("forced refresh: %+v, %d leases", r, a.leases)
	}
	// b, forced too, finds a's newer token: no second request.
	r = b.step(now.Add(time.Second), mineB, true)
	if r.fetched || r.tok == nil || r.tok.Token != parseShared(store.fields).Token {
		t.Fatalf("second forced refresh: %+v; want a's fresh token", r)
	}
}

// racyStore lets another host write between a read and the next write.
type racyStore struct {
	*memStore
	between func()
}

func (r *racyStore) ReadEntry(ctx context.Context, mount, path string) (map[string]string, int, error) {
	f, v, err := r.memStore.ReadEntry(ctx, mount, path)
	if r.between != nil {
		r.between()
		r.between = nil
	}
	return f, v, err
}

// Two hosts find the token due at once: the check-and-set lets one fetch.
func TestShareLostRace(t *testing.T) {
	mem := &memStore{}
	store := &racyStore{memStore: mem}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	a, b := newTestSharer("a", store, clock), newTestSharer("b", mem, clock)
	mine := a.step(now, nil, false).tok
	now = a.policy.due(*mine).Add(time.Second)
	// b takes the lease between a's read and a's lease write.
	store.between = func() { b.step(now, mine, false) }
	r := a.step(now, mine, false)
	if r.fetched || r.tok != nil || a.leases != 1 || b.leases != 1 || !r.next.After(now) {
		t.Fatalf("the host that lost the race: %+v, leases a %d b %d; want it to wait and read again", r, a.leases, b.leases)
	}
	if e := parseShared(mem.fields); e.FetchedBy != "b" {
		t.Fatalf("entry fetched by %q, want b", e.FetchedBy)
	}
	// At its next read a finds b's token.
	r = a.step(r.next, mine, false)
	if r.fetched || r.tok == nil || r.tok.FetchedBy != "b" {
		t.Fatalf("a after the race: %+v", r)
	}
}

// The keeper serves a token read from the entry, and while the hosts
// refreshing it fail at the endpoint, STATUS says why.
func TestKeeperSharedEntry(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "pw")
	clock := newFakeClock()
	vault := &fakeVault{creds: vaultsrc.Credentials{ID: "cid", Secret: "pw"}}
	store := &memStore{}
	cfg := tokenConfig(ep.TokenURL(), "basic+body")
	cfg.SharePath, cfg.ShareMount = "tokend/shared/vibes", "secret"
	deps := testDeps(vault, clock, zerolog.Nop())
	deps.ShareID, deps.ShareStore = "me", store
	k := New(*cfg, deps)
	other := newTestSharer("other", store, clock.Now)
	other.config = shareConfig(&k.cfg)

	first := other.step(clock.Now(), nil, false).tok
	k.attempt(context.Background())
	s := k.Snapshot(clock.Now())
	if s.Token == nil || s.Token.Value != first.Token || s.State() != proto.StateOK || ep.Calls.Load() != 0 {
		t.Fatalf("after reading the entry: %+v, %d token requests; want the other host's token", s, ep.Calls.Load())
	}
	if vault.reads != 1 {
		t.Errorf("%d credential reads: a host that only reads the entry keeps the credentials in memory for a fallback", vault.reads)
	}

	// The token falls due; the host refreshing it fails at the endpoint.
	clock.Advance(k.share.policy.due(*first).Sub(clock.Now()) + time.Second)
	other.fetchErr = &oauth.EndpointError{Status: http.StatusServiceUnavailable}
	if r := other.step(clock.Now(), first, false); r.err == nil {
		t.Fatal("the other host's refresh did not fail")
	}
	k.attempt(context.Background())
	s = k.Snapshot(clock.Now())
	if s.Token == nil || s.Token.Value != first.Token || s.State() != proto.StateDegraded ||
		!strings.Contains(s.Err, "the token endpoint failed for the hosts refreshing the shared token (1 in a row; last from other): token endpoint answered 503") {
		t.Fatalf("while the lease holders fail: state %s, error %q", s.State(), s.Err)
	}
	if ep.Calls.Load() != 0 {
		t.Errorf("%d token requests: the host asked on its own while the fleet backs off", ep.Calls.Load())
	}
}

// A host that starts by reading a short token from the entry (it cannot
// know the lifetime before) schedules its next attempt on its own
// schedule, not the entry's late one: TestE2ESharedGrid caught hosts
// reading again 20 s after a 10 s token was due.
func TestKeeperShortSharedToken(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "pw")
	clock := newFakeClock()
	store := &memStore{}
	cfg := tokenConfig(ep.TokenURL(), "basic+body")
	cfg.SharePath, cfg.ShareMount = "tokend/shared/vibes", "secret"
	cfg.MinRemaining, cfg.RequestTimeout = 2*time.Second, 10*time.Second
	deps := testDeps(&fakeVault{creds: vaultsrc.Credentials{ID: "cid", Secret: "pw"}}, clock, zerolog.Nop())
	deps.ShareID, deps.ShareStore = "me", store
	k := New(*cfg, deps)
	other := newTestSharer("other", store, clock.Now)
	other.config, other.lifetime = shareConfig(&k.cfg), 10*time.Second
	other.policy = k.share.policy

	first := other.step(clock.Now(), nil, false).tok
	wait := k.attempt(context.Background())
	if s := k.Snapshot(clock.Now()); s.Token == nil || s.Token.Value != first.Token {
		t.Fatalf("the host did not serve the entry's token: %+v", s)
	}
	// Alone, a 10 s token with min_remaining 2s and request_timeout 10s
	// is refreshed 4 s after it was fetched (refreshAfter).
	if own := refreshAfter(10*time.Second, 2*time.Second, 10*time.Second, 0.5); wait > own {
		t.Errorf("next attempt in %s, want by %s: a host alone would refresh then", wait, own)
	}
	clock.Advance(wait)
	k.attempt(context.Background())
	if s := k.Snapshot(clock.Now()); s.Token == nil || s.Token.Value == first.Token || !k.servable(s.Token, clock.Now()) {
		t.Errorf("at the next attempt the host serves %+v, want its own new token", s.Token)
	}
}
