package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/vaultsrc"
)

// fakeClock moves only when told to.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	waiting chan time.Duration // each After call reports its duration
	jumped  chan struct{}
}

type waiter struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), waiting: make(chan time.Duration, 100), jumped: make(chan struct{})}
}

// The fake's times have no monotonic reading: Wall is Now.
func (f *fakeClock) Wall() time.Time { return f.Now() }

func (f *fakeClock) Jumped() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jumped
}

// Suspend moves the time on by d as a suspended machine sees it after it
// resumes: the wall clock moved, the timers (which count monotonic time)
// did not, and the jump is told.
func (f *fakeClock) Suspend(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	for i := range f.waiters {
		f.waiters[i].at = f.waiters[i].at.Add(d)
	}
	close(f.jumped)
	f.jumped = make(chan struct{})
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan time.Time, 1)
	f.waiters = append(f.waiters, waiter{f.now.Add(d), c})
	f.waiting <- d
	return c
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.waiters[:0]
	for _, w := range f.waiters {
		if !w.at.After(f.now) {
			w.c <- f.now
		} else {
			kept = append(kept, w)
		}
	}
	f.waiters = kept
}

// nextWait waits for the keeper to go to sleep and returns for how long.
func (f *fakeClock) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-f.waiting:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("keeper never went to sleep")
		return 0
	}
}

// fakeVault is a CredentialSource whose answers the test controls.
type fakeVault struct {
	mu    sync.Mutex
	creds vaultsrc.Credentials
	queue []vaultsrc.Credentials // answered first, one per read
	err   error
	hang  bool // block until the caller's deadline
	reads int
}

func (v *fakeVault) Read(ctx context.Context, s vaultsrc.Secret) (vaultsrc.Credentials, error) {
	v.mu.Lock()
	if v.hang {
		v.mu.Unlock()
		<-ctx.Done()
		return vaultsrc.Credentials{}, ctx.Err()
	}
	defer v.mu.Unlock()
	v.reads++
	if len(v.queue) > 0 {
		c := v.queue[0]
		v.queue = v.queue[1:]
		return c, nil
	}
	return v.creds, v.err
}

// rotate makes the next read answer the current credentials once more
// (Vault not yet updated), and later reads c.
func (v *fakeVault) rotate(c vaultsrc.Credentials) {
	v.mu.Lock()
	v.queue = []vaultsrc.Credentials{v.creds}
	v.creds = c
	v.mu.Unlock()
}

// hangReads makes reads block until their context ends.
func (v *fakeVault) hangReads() {
	v.mu.Lock()
	v.hang = true
	v.mu.Unlock()
}

func (v *fakeVault) set(c vaultsrc.Credentials, err error) {
	v.mu.Lock()
	v.creds, v.err = c, err
	v.mu.Unlock()
}

type keeperRig struct {
	k     *Keeper
	clock *fakeClock
	vault *fakeVault
	ep    *daemontest.Endpoint
	logs  *daemontest.SyncBuf
}

func startKeeper(t *testing.T, mode string) *keeperRig {
	t.Helper()
	const id, pw = "client-1", "s3cr3t+/=value"
	rig := &keeperRig{clock: newFakeClock(), vault: &fakeVault{creds: vaultsrc.Credentials{ID: id, Secret: pw}},
		ep: daemontest.NewEndpoint(t, mode, id, pw), logs: &daemontest.SyncBuf{}}
	log := zerolog.New(rig.logs)
	rig.k = New(*tokenConfig(rig.ep.TokenURL(), mode), testDeps(rig.vault, rig.clock, log))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rig.k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		for _, secret := range append([]string{pw, "rotated-secret"}, rig.ep.Issued()...) {
			if strings.Contains(rig.logs.String(), secret) {
				t.Errorf("secret or token %q in logs:\n%s", secret, rig.logs)
			}
		}
	})
	return rig
}

func (r *keeperRig) get(t *testing.T) (proto.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return r.k.Get(ctx, 5*time.Second)
}

func TestKeeperRefreshSchedule(t *testing.T) {
	r := startKeeper(t, "basic+body")
	d := r.clock.nextWait(t)
	if d < 45*time.Minute || d > 48*time.Minute {
		t.Fatalf("first refresh in %v, want 75-80%% of an hour", d)
	}
	tok, err := r.get(t)
	if err != nil || tok.Value != r.ep.LastToken() || tok.Type != "Bearer" || tok.Scope != daemontest.RBMScope {
		t.Fatalf("get: %+v %v", tok, err)
	}
	first := tok.Value
	r.clock.Advance(d)
	r.clock.nextWait(t)
	if tok, _ = r.get(t); tok.Value == first || r.ep.Calls.Load() != 2 {
		t.Fatalf("not refreshed: %q, %d calls", tok.Value, r.ep.Calls.Load())
	}
	if !tok.ExpiresAt.Equal(r.clock.Now().Add(time.Hour)) {
		t.Errorf("expiry not counted from the request: %v", tok.ExpiresAt)
	}
}

// While the endpoint fails, the old token is served until it falls under
// min_remaining, never after; retries back off up to retry_max.
func TestKeeperFailuresAndMinRemaining(t *testing.T) {
	r := startKeeper(t, "basic+body")
	d := r.clock.nextWait(t)
	for i := 0; i < 200; i++ {
		r.ep.Push(daemontest.Fault{Status: 503, Body: `{"error":"server_error"}`})
	}
	r.clock.Advance(d)
	var waits []time.Duration
	elapsed := d
	for elapsed < time.Hour-time.Minute-time.Second {
		w := r.clock.nextWait(t)
		waits = append(waits, w)
		if w > 30*time.Second {
			t.Fatalf("retry wait %v over retry_max", w)
		}
		if _, err := r.get(t); err != nil {
			t.Fatalf("token refused at %v with %v left: %v", elapsed, time.Hour-elapsed, err)
		}
		r.clock.Advance(w)
		elapsed += w
	}
	if waits[0] > time.Second || waits[len(waits)-1] < 14*time.Second {
		t.Errorf("backoff did not grow: %v ... %v", waits[0], waits[len(waits)-1])
	}
	r.clock.nextWait(t)
	r.clock.Advance(time.Hour - time.Minute - elapsed + time.Second)
	_, err := r.get(t)
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeUnavailable || !strings.Contains(perr.Msg, "503") {
		t.Fatalf("token under min_remaining served or wrong error: %v", err)
	}
}

// A rotated secret: the endpoint rejects the old one, the keeper reads
// Vault again at once and succeeds in the same attempt.
func TestKeeperRotatedSecret(t *testing.T) {
	r := startKeeper(t, "basic+body")
	d := r.clock.nextWait(t)
	r.ep.SetCreds("client-1", "rotated-secret")
	// Vault's first answer is still the old secret; the re-read brings the new one.
	r.vault.rotate(vaultsrc.Credentials{ID: "client-1", Secret: "rotated-secret"})
	r.clock.Advance(d)
	if w := r.clock.nextWait(t); w < 40*time.Minute {
		t.Fatalf("rotation not recovered in one attempt: next wait %v", w)
	}
	if r.ep.Calls.Load() != 3 {
		t.Errorf("token endpoint calls = %d, want 3 (first, rejected, retried)", r.ep.Calls.Load())
	}
}

// Vault down: the refresh goes ahead with the credentials in memory.
func TestKeeperVaultDown(t *testing.T) {
	r := startKeeper(t, "basic")
	d := r.clock.nextWait(t)
	r.vault.set(vaultsrc.Credentials{}, errors.New("vault is sealed"))
	r.clock.Advance(d)
	if w := r.clock.nextWait(t); w < 40*time.Minute || r.ep.Calls.Load() != 2 {
		t.Fatalf("refresh failed with vault down: wait %v calls %d", w, r.ep.Calls.Load())
	}
}

// Exactly one request in flight, whatever the load; early readers wait for
// the first token and get it.
func TestKeeperSingleFlight(t *testing.T) {
	clock := newFakeClock()
	ep := daemontest.NewEndpoint(t, "body", "a", "b")
	ep.Hold()
	k := New(*tokenConfig(ep.TokenURL(), "body"), testDeps(&fakeVault{creds: vaultsrc.Credentials{ID: "a", Secret: "b"}}, clock, zerolog.Nop()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go k.Run(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := k.Get(context.Background(), 5*time.Second)
			errs <- err
		}()
	}
	awaitBlocked(t, "tokens.(*Keeper).Get(", 200)
	ep.Release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("early reader: %v", err)
		}
	}
	if ep.Calls.Load() != 1 || ep.MaxInflight.Load() != 1 {
		t.Errorf("calls %d, max in flight %d; want 1 and 1", ep.Calls.Load(), ep.MaxInflight.Load())
	}
}

// A Vault that hangs costs a refresh at most vaultTimeout: the request
// then goes ahead with the credentials in memory.
func TestKeeperVaultHangs(t *testing.T) {
	r := startKeeper(t, "basic+body")
	d := r.clock.nextWait(t)
	r.vault.hangReads()
	start := time.Now()
	r.clock.Advance(d)
	if w := r.clock.nextWait(t); w < 40*time.Minute || r.ep.Calls.Load() != 2 {
		t.Fatalf("refresh failed with vault hanging: wait %v calls %d", w, r.ep.Calls.Load())
	}
	if took := time.Since(start); took > vaultTimeout+5*time.Second {
		t.Errorf("refresh took %v with vault hanging; the deadline is %v", took, vaultTimeout)
	}
}

// stuckSource is a credential source with a bug below it: a read that
// ignores its deadline and blocks until released.
type stuckSource struct {
	entered chan struct{}
	release chan struct{}
}

func (s *stuckSource) Read(context.Context, vaultsrc.Secret) (vaultsrc.Credentials, error) {
	select {
	case s.entered <- struct{}{}: // buffered: the first read is noted
	default:
	}
	<-s.release
	return vaultsrc.Credentials{}, errors.New("released")
}

// The watchdog's view of a keeper: an attempt stuck far past its deadlines
// counts as wedged; one that is merely slow, or done, does not.
func TestKeeperWedged(t *testing.T) {
	src := &stuckSource{entered: make(chan struct{}, 1), release: make(chan struct{})}
	ep := daemontest.NewEndpoint(t, "basic+body", "id", "pw")
	k := New(*tokenConfig(ep.TokenURL(), "basic+body"), Deps{Creds: src, Client: http.DefaultClient, Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); k.Run(ctx) }()
	defer func() { cancel(); <-done }()

	<-src.entered
	limit := k.stuckAfter()
	now := time.Now()
	if k.Wedged(now) {
		t.Errorf("wedged as soon as the attempt started")
	}
	if k.Wedged(now.Add(limit / 2)) {
		t.Errorf("wedged while within its deadlines")
	}
	if !k.Wedged(now.Add(limit + time.Second)) {
		t.Errorf("not wedged %v into an attempt", limit+time.Second)
	}
	// Released, the attempt ends; the keeper backs off between attempts.
	close(src.release)
	daemontest.WaitFor(t, "the stuck attempt to end", 5*time.Second, func() bool { return !k.Wedged(time.Now().Add(limit + time.Second)) })
}

// Tokens that live no longer than min_remaining can never be served: the
// keeper backs off as after a failure instead of asking again every
// second, and says why.
func TestKeeperLifetimeUnderMinRemaining(t *testing.T) {
	r := startKeeper(t, "basic+body")
	r.clock.nextWait(t)
	r.ep.SetTTL(30) // min_remaining is a minute
	r.clock.Advance(time.Hour)
	var waits []time.Duration
	for i := 0; i < 8; i++ {
		w := r.clock.nextWait(t)
		waits = append(waits, w)
		r.clock.Advance(w)
	}
	if waits[len(waits)-1] < 5*time.Second {
		t.Errorf("no backoff: %v", waits)
	}
	_, err := r.get(t)
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeUnavailable || !strings.Contains(perr.Msg, "issues tokens for 30s, not more than min_remaining 1m0s") {
		t.Errorf("get: %v", err)
	}
}

// The snapshot has what STATUS=, errors and metrics report: after a
// success, the token and when the next refresh is due; after failures,
// their count and the last error, and the success before them.
func TestKeeperSnapshot(t *testing.T) {
	r := startKeeper(t, "basic+body")
	d := r.clock.nextWait(t)
	s := r.k.Snapshot(r.clock.Now())
	if s.Token == nil || !s.Servable || s.Err != "" || s.Failures != 0 || !s.LastSuccess.Equal(r.clock.Now()) || !s.Next.Equal(r.clock.Now().Add(d)) {
		t.Fatalf("after a success: %+v", s)
	}
	success := s.LastSuccess
	r.ep.Push(daemontest.Fault{Status: 503}, daemontest.Fault{Status: 503})
	r.clock.Advance(d)
	w := r.clock.nextWait(t)
	r.clock.Advance(w)
	r.clock.nextWait(t)
	s = r.k.Snapshot(r.clock.Now())
	if s.Failures != 2 || !strings.Contains(s.Err, "503") || !s.Servable || !s.LastSuccess.Equal(success) || !s.Next.After(r.clock.Now()) {
		t.Fatalf("after two failures: %+v", s)
	}
}

// min=: 100 clients asking at once for more time than the token has make
// one early refresh between them (they join it), and all get the new
// token; another early refresh within 30s is refused, without a request;
// 30s later it is allowed again.
func TestKeeperFreshJoins(t *testing.T) {
	r := startKeeper(t, "basic+body")
	r.clock.nextWait(t) // the first token (an hour) is there
	r.ep.Hold()
	r.clock.Advance(10 * time.Minute)
	before := r.ep.IssuedCount()
	var wg sync.WaitGroup
	got := make(chan string, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := r.k.GetFresh(context.Background(), time.Second, 55*time.Minute)
			if err != nil {
				t.Errorf("min=55m: %v", err)
			}
			got <- tok.Value
		}()
	}
	awaitBlocked(t, "tokens.(*Keeper).GetFresh(", 100)
	r.ep.Release()
	wg.Wait()
	close(got)
	if n := r.ep.IssuedCount() - before; n != 1 {
		t.Errorf("%d token requests for 100 min= clients, want 1", n)
	}
	for v := range got {
		if v != r.ep.LastToken() {
			t.Errorf("a client got %q, not the fresh token", v)
			break
		}
	}
	r.clock.nextWait(t)

	// 15s later the fresh token has 59m45s left: min=59m50s would need
	// another early refresh, which waits until 30s have passed.
	r.clock.Advance(15 * time.Second)
	before = r.ep.IssuedCount()
	if _, err := r.k.GetFresh(context.Background(), time.Second, 59*time.Minute+50*time.Second); err == nil || !strings.Contains(err.Error(), "at most one per 30s") {
		t.Errorf("a second early refresh within 30s: %v", err)
	}
	if r.ep.IssuedCount() != before {
		t.Errorf("a refused early refresh made a request")
	}
	r.clock.Advance(20 * time.Second)
	if tok, err := r.k.GetFresh(context.Background(), time.Second, 59*time.Minute+50*time.Second); err != nil || tok.Value != r.ep.LastToken() || r.ep.IssuedCount() != before+1 {
		t.Errorf("35s later: %v, %d requests", err, r.ep.IssuedCount()-before)
	}
	// More than the lifetime can never be had.
	if _, err := r.k.GetFresh(context.Background(), time.Second, 2*time.Hour); err == nil || !strings.Contains(err.Error(), "issues tokens for 1h0m0s") {
		t.Errorf("min= over the lifetime: %v", err)
	}
}

// A keeper that has never had a token logs its failures as warnings at
// first, then as errors: READY=1 and the units after tokend wait on it.
// Once it has had a token, failures are warnings (it serves the old one).
func TestKeeperNoTokenEscalates(t *testing.T) {
	logs := &daemontest.SyncBuf{}
	k := New(*tokenConfig("https://127.0.0.1:1/oauth2/token", "basic"), testDeps(&fakeVault{}, newFakeClock(), zerolog.New(logs)))
	var levels []string
	for i := 0; i < noTokenEscalation+1; i++ {
		logs.Reset()
		k.failed(errors.New("connection refused"))
		var line struct{ Level, Hint string }
		json.Unmarshal([]byte(logs.String()), &line)
		levels = append(levels, line.Level)
		if i == noTokenEscalation-1 && !strings.Contains(line.Hint, "no token obtained yet") {
			t.Errorf("the escalated line has no hint: %s", logs)
		}
	}
	if want := []string{"warn", "warn", "warn", "error", "error"}; !slices.Equal(levels, want) {
		t.Errorf("levels %v, want %v", levels, want)
	}
	k.lastSuccess = k.clock.Now()
	logs.Reset()
	k.failed(errors.New("connection refused"))
	if !strings.Contains(logs.String(), `"level":"warn"`) {
		t.Errorf("a keeper with a token logs failures as warnings: %s", logs)
	}
}

// awaitBlocked waits until n goroutines are blocked in a select inside
// fn (a name as goroutine dumps print it), so that a test's claim about
// waiting clients is tested on a slow runner too, not assumed after a
// sleep. It fails the test after 10 s, saying how many it saw.
func awaitBlocked(t *testing.T, fn string, n int) {
	t.Helper()
	buf := make([]byte, 1<<22)
	deadline := time.Now().Add(10 * time.Second)
	for {
		dump := string(buf[:runtime.Stack(buf, true)])
		blocked := 0
		for _, g := range strings.Split(dump, "\n\n") {
			if strings.Contains(g, "[select") && strings.Contains(g, fn) {
				blocked++
			}
		}
		if blocked >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines blocked in %s after 10s, want %d", blocked, fn, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// tokenConfig is a token's fetch settings for tests of the keeper.
func tokenConfig(url, mode string) *config.Fetch {
	return &config.Fetch{Name: "vibes", TokenURL: url, Scope: daemontest.RBMScope, ClientAuth: mode,
		MinRemaining: time.Minute, RetryMax: 30 * time.Second, RequestTimeout: 2 * time.Second}
}

// testDeps builds a keeper's dependencies for a test: the credentials,
// the clock, rand 0.5 (the middle of every jitter), the default client.
func testDeps(creds CredentialSource, clock clock, log zerolog.Logger) Deps {
	return Deps{Creds: creds, Client: http.DefaultClient, clock: clock, rand: func() float64 { return 0.5 }, Log: log}
}

// Requests that joined a forced refresh which the once-per-30 s limit
// refused get their answer at once, not after freshWait.
func TestKeeperRefusedForceJoiners(t *testing.T) {
	r := startKeeper(t, "basic+body")
	r.clock.nextWait(t)
	r.clock.Advance(10 * time.Minute)
	if _, err := r.k.GetFresh(context.Background(), time.Second, 55*time.Minute); err != nil {
		t.Fatalf("the first forced refresh: %v", err)
	}
	r.clock.nextWait(t)
	r.clock.Advance(10 * time.Minute)
	// A client is forcing (its check is under way) as others join.
	r.k.forcing.Store(true)
	errs := make(chan error, 10)
	for range 10 {
		go func() {
			_, err := r.k.GetFresh(context.Background(), time.Second, 55*time.Minute)
			errs <- err
		}()
	}
	awaitBlocked(t, "tokens.(*Keeper).GetFresh(", 10)
	began := time.Now()
	r.k.lastForced.Store(r.clock.Now().UnixNano()) // forced just now: the forcing client is refused
	r.k.refuseForce()
	for range 10 {
		if err := <-errs; err == nil || !strings.Contains(err.Error(), "a refresh was forced less than 30s ago") {
			t.Errorf("a joiner: %v", err)
		}
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("joiners answered after %v, want at once", took)
	}
}
