package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
	"github.com/tokend/tokend/vaultsrc"
)

// CredentialSource reads an OAuth2 client's credentials (from Vault).
type CredentialSource interface {
	Read(ctx context.Context, s vaultsrc.Secret) (vaultsrc.Credentials, error)
}

// TransitSigner signs with a key that never leaves Vault (Transit).
type TransitSigner interface {
	TransitKeyType(ctx context.Context, mount, key string) (string, error)
	TransitSign(ctx context.Context, mount, key, alg string, input []byte) ([]byte, error)
}

// clock is time as the keeper sees it; tests drive a fake one.
type clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

const (
	// vaultTimeout bounds a Vault read on the refresh path: an outage must
	// not delay the token request, which then uses the credentials it has.
	vaultTimeout = 3 * time.Second
	// freshWait is how long a min= request waits for a fresher token.
	freshWait = 10 * time.Second
	// forceEvery is how often min= may force an early refresh, whatever
	// the clients ask: an identity provider may count every token it
	// issues against a quota.
	forceEvery = 30 * time.Second
)

// keeper keeps one token fresh. Its run loop is the only writer and the
// only thing that talks to the network, so there is exactly one token
// request in flight whatever the client load; readers only load an
// atomic pointer.
type keeper struct {
	cfg   config.Fetch
	creds CredentialSource
	hc    *http.Client
	clock clock
	rand  func() float64
	log   zerolog.Logger
	// changed is called after every attempt, for status reporting;
	// fetched after every token endpoint request, for metrics.
	changed func()
	fetched func(result string, took time.Duration)

	tok       atomic.Pointer[server.Token]
	state     atomic.Pointer[keeperState]
	busySince atomic.Int64 // unix nanos an attempt started; 0 when idle
	ready     chan struct{}
	readyOnce sync.Once
	// changes is closed (and replaced) after every attempt: waiters for
	// a fresher token, WATCH and the file sink wake on it.
	changes    atomic.Pointer[chan struct{}]
	kick       chan struct{} // refresh now (min=); buffered
	lastForced atomic.Int64  // unix nanos of the last refresh min= forced
	forcing    atomic.Bool   // a forced refresh is asked for and not done yet
	lifetime   atomic.Int64  // the last token's lifetime, in ns
	// cert is the client certificate for tls_client_auth; certOf says
	// which PEM it was made from (run loop only).
	cert   atomic.Pointer[tls.Certificate]
	certOf string
	// share is the shared entry's side (share_path); nil for a token of
	// this host alone.
	share *sharer

	// Run loop only.
	transitType string               // the Transit key's type, once read
	budget      budget               // max_fetches_per_hour
	endpoint    string               // the discovered token endpoint; "" until discovered
	cached      vaultsrc.Credentials // last good credentials
	failures    int                  // consecutive failed attempts
	lastSuccess time.Time
}

// keeperState is the outcome of the last attempt. The run loop replaces it
// whole, so readers see one attempt's values together.
type keeperState struct {
	err         string    // "" after a success
	next        time.Time // when the next attempt is due
	failures    int
	lastSuccess time.Time // zero before the first success
}

// snapshot is a keeper as STATUS=, error answers and metrics report it.
type snapshot struct {
	Token       *server.Token // nil before the first token
	Servable    bool          // Token has at least min_remaining left
	Err         string        // the last attempt's error; "" after a success
	Next        time.Time     // when the next attempt is due; zero before the first ends
	Failures    int           // consecutive failed attempts
	LastSuccess time.Time
}

// snapshot reads the keeper's state at now.
func (k *keeper) snapshot(now time.Time) snapshot {
	t := k.tok.Load()
	s := snapshot{Token: t, Servable: k.servable(t, now)}
	if st := k.state.Load(); st != nil {
		s.Err, s.Next, s.Failures, s.LastSuccess = st.err, st.next, st.failures, st.lastSuccess
	}
	return s
}

// state is the token's state as STATUS and /healthz report it.
func (s snapshot) state() string {
	switch {
	case !s.Servable:
		return proto.StateUnavailable
	case s.Err != "":
		return proto.StateDegraded
	}
	return proto.StateOK
}

// status is the snapshot as the STATUS verb answers it.
func (s snapshot) status(name string, now time.Time) proto.Status {
	st := proto.Status{Name: name, State: s.state(), ExpiresIn: proto.Unknown, RefreshIn: proto.Unknown,
		Failures: s.Failures, LastSuccess: s.LastSuccess, LastError: s.Err}
	if s.Token != nil {
		st.ExpiresIn = int64(max(s.Token.ExpiresAt.Sub(now), 0) / time.Second)
	}
	if !s.Next.IsZero() {
		st.RefreshIn = int64(max(s.Next.Sub(now), 0) / time.Second)
	}
	return st
}

// why says what the keeper is waiting for.
func (s snapshot) why() string {
	if s.Err != "" {
		return s.Err
	}
	if s.Token != nil {
		return "refresh in progress"
	}
	return "first request in progress"
}

func newKeeper(cfg config.Fetch, creds CredentialSource, hc *http.Client, log zerolog.Logger) *keeper {
	ch := make(chan struct{})
	k := &keeper{
		cfg:     cfg,
		creds:   creds,
		hc:      hc,
		clock:   realClock{},
		rand:    rand.Float64,
		log:     log.With().Str("token", cfg.Name).Logger(),
		changed: func() {},
		fetched: func(string, time.Duration) {},
		budget:  budget{max: cfg.MaxPerHour},
		ready:   make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	k.changes.Store(&ch)
	return k
}

// next returns a channel closed when the next attempt ends.
func (k *keeper) next() <-chan struct{} { return *k.changes.Load() }

// broadcast wakes everyone waiting on next.
func (k *keeper) broadcast() {
	ch := make(chan struct{})
	close(*k.changes.Swap(&ch))
}

// get returns the current token if it has at least min_remaining left. A
// request that comes before the first token waits up to wait for it.
func (k *keeper) get(ctx context.Context, wait time.Duration) (server.Token, error) {
	t := k.tok.Load()
	if t == nil {
		timer := time.NewTimer(wait)
		select {
		case <-k.ready:
		case <-ctx.Done():
		case <-timer.C:
		}
		timer.Stop()
		t = k.tok.Load()
	}
	now := k.clock.Now()
	if perr := k.unservable(t, now); perr != nil {
		return server.Token{}, perr
	}
	return *t, nil
}

// unservable says why t cannot be served at now; nil when it can.
func (k *keeper) unservable(t *server.Token, now time.Time) *proto.Error {
	switch {
	case t == nil:
		return &proto.Error{Code: proto.CodeUnavailable, Msg: "no token yet: " + k.snapshot(now).why()}
	case !k.servable(t, now):
		return &proto.Error{Code: proto.CodeUnavailable, Msg: fmt.Sprintf(
			"token %s has %ds left, under min_remaining %s: %s", k.cfg.Name, int64(t.ExpiresAt.Sub(now)/time.Second), k.cfg.MinRemaining, k.snapshot(now).why())}
	}
	return nil
}

// getFresh is get for a token with at least min left (min=). When the
// current one has less, the keeper refreshes now, or the request joins
// the attempt in flight, and waits up to freshWait. Early refreshes are
// forced at most once per forceEvery per token.
func (k *keeper) getFresh(ctx context.Context, wait, min time.Duration) (server.Token, error) {
	t, err := k.get(ctx, wait)
	now := k.clock.Now()
	if err != nil || t.ExpiresAt.Sub(now) >= min {
		return t, err
	}
	unavailable := func(format string, args ...any) (server.Token, error) {
		return server.Token{}, &proto.Error{Code: proto.CodeUnavailable, Msg: fmt.Sprintf(format, args...)}
	}
	if lt := time.Duration(k.lifetime.Load()); lt <= min {
		return unavailable("token %s cannot have min=%d: the token endpoint issues tokens for %s", k.cfg.Name, int(min/time.Second), lt)
	}
	wake := k.next()
	// Join a refresh in flight, or one another client asked for already;
	// forcing is the gate, so that of clients arriving together one forces
	// and the others join.
	if k.busySince.Load() == 0 && k.forcing.CompareAndSwap(false, true) {
		if !k.mayForce(now) {
			k.forcing.Store(false)
			return unavailable("token %s has %ds left, under min=%d, and a refresh was forced less than %s ago (at most one per %s)",
				k.cfg.Name, int64(t.ExpiresAt.Sub(now)/time.Second), int(min/time.Second), forceEvery, forceEvery)
		}
		k.log.Info().Dur("min", min).Msg("refreshing early: a client asked for a token with more time left (min=)")
		select {
		case k.kick <- struct{}{}:
		default:
		}
	}
	timer := time.NewTimer(freshWait)
	defer timer.Stop()
	for {
		select {
		case <-wake:
		case <-ctx.Done():
			return unavailable("gave up waiting for token %s with %ds left: %v", k.cfg.Name, int(min/time.Second), ctx.Err())
		case <-timer.C:
			return unavailable("no token %s with %ds left within %s", k.cfg.Name, int(min/time.Second), freshWait)
		}
		wake = k.next()
		now = k.clock.Now()
		if t := k.tok.Load(); k.servable(t, now) && t.ExpiresAt.Sub(now) >= min {
			return *t, nil
		}
		if s := k.snapshot(now); s.Err != "" {
			return unavailable("no token %s with %ds left: %s", k.cfg.Name, int(min/time.Second), s.Err)
		}
	}
}

// mayForce takes the right to force a refresh, once per forceEvery.
func (k *keeper) mayForce(now time.Time) bool {
	last := k.lastForced.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < forceEvery {
		return false
	}
	return k.lastForced.CompareAndSwap(last, now.UnixNano())
}

// servable reports whether t exists and has at least min_remaining left.
func (k *keeper) servable(t *server.Token, now time.Time) bool {
	return t != nil && t.ExpiresAt.Sub(now) >= k.cfg.MinRemaining
}

// run refreshes the token until ctx ends.
func (k *keeper) run(ctx context.Context) {
	for {
		wait := k.attempt(ctx)
		k.changed()
		k.broadcast()
		select {
		case <-ctx.Done():
			return
		case <-k.clock.After(wait):
		case <-k.kick:
		}
	}
}

// attempt makes one refresh attempt and says how long to wait for the next.
func (k *keeper) attempt(ctx context.Context) time.Duration {
	k.busySince.Store(time.Now().UnixNano())
	defer k.busySince.Store(0)
	// This attempt answers every forced refresh asked so far (min=); busy
	// is set first, so that a client arriving now joins it.
	forced := k.forcing.Swap(false)
	select {
	case <-k.kick:
	default:
	}
	if k.share != nil {
		return k.attemptShared(ctx, forced)
	}
	g, sent, err := k.fetchFor(ctx, false)
	if err != nil {
		return k.failed(err)
	}
	next := sent.Add(refreshAfter(g.Lifetime, k.cfg.MinRemaining, k.cfg.RequestTimeout, k.rand()))
	t := shared{Token: g.AccessToken, Type: g.TokenType, FetchedAt: sent, ExpiresAt: sent.Add(g.Lifetime)}
	ev, msg := k.log.Info(), "token refreshed"
	if g.NoExpiry {
		ev = k.log.Warn().Dur("assumed_lifetime", g.Lifetime)
		msg = "token refreshed; the answer had no expires_in, assuming a short lifetime"
	}
	k.install(t, next, ev, msg)
	return max(next.Sub(k.clock.Now()), 0)
}

// attemptShared is an attempt through the shared entry (share_path).
func (k *keeper) attemptShared(ctx context.Context, forced bool) time.Duration {
	var mine *shared
	if t := k.tok.Load(); t != nil {
		mine = &shared{Token: t.Value, Type: t.Type, Scope: t.Scope, ExpiresAt: t.ExpiresAt,
			FetchedAt: t.ExpiresAt.Add(-time.Duration(k.lifetime.Load()))}
	}
	r := k.share.step(ctx, k.clock.Now(), mine, forced, k.fetchFor)
	if r.err != nil {
		return k.failed(r.err)
	}
	switch {
	case r.tok == nil:
		// Serving the current token while another host refreshes it.
		st := keeperState{lastSuccess: k.lastSuccess, next: r.next, err: proto.Clean(r.problem)}
		if old := k.state.Load(); old != nil && r.problem == "" {
			st.err, st.failures = old.err, old.failures
		}
		k.state.Store(&st)
	case r.fetched:
		k.install(*r.tok, r.next, k.log.Info(), "token refreshed")
	default:
		k.install(*r.tok, r.next, k.log.Info().Str("fetched_by", r.tok.FetchedBy), "token read from the shared entry")
		// A host that only ever reads the entry still needs the client's
		// credentials in memory, to fetch for itself should Vault go away.
		// Once per token: it also sees a rotation before it needs it.
		if _, err := k.readVault(ctx); err != nil {
			k.log.Warn().Err(err).Msg("vault read of the client credentials failed; keeping those in memory")
		}
	}
	return max(r.next.Sub(k.clock.Now()), 0)
}

// fetchFor asks the token endpoint for a token for this host; cached
// says to use the credentials in memory without asking Vault first.
func (k *keeper) fetchFor(ctx context.Context, cached bool) (grant, time.Time, error) {
	sent := k.clock.Now()
	g, err := k.obtain(ctx, cached)
	if err == nil && g.Lifetime <= k.cfg.MinRemaining {
		// Never servable: back off like a failure rather than ask again
		// at once, and again, for tokens nobody can have.
		err = fmt.Errorf("the token endpoint issues tokens for %s, not more than min_remaining %s: lower min_remaining", g.Lifetime, k.cfg.MinRemaining)
	}
	return g, sent, err
}

// install serves t from now on and schedules the next attempt.
func (k *keeper) install(t shared, next time.Time, ev *zerolog.Event, msg string) {
	k.failures, k.lastSuccess = 0, k.clock.Now()
	k.tok.Store(&server.Token{
		Name: k.cfg.Name, Type: t.Type, Value: t.Token, Scope: k.cfg.Scope,
		// From the moment the request was sent: the token may have been
		// minted at any point after it. Monotonic under a real clock.
		ExpiresAt: t.ExpiresAt,
		FetchedAt: k.clock.Now(),
	})
	k.lifetime.Store(int64(t.lifetime()))
	k.readyOnce.Do(func() { close(k.ready) })
	k.state.Store(&keeperState{next: next, lastSuccess: k.lastSuccess})
	ev.Dur("lifetime", t.lifetime()).Time("expires_at", t.ExpiresAt.UTC()).Time("next_refresh", next.UTC()).Msg(msg)
}

// noTokenEscalation is the failed attempt from which a keeper that has
// never had a token logs its failures as errors rather than warnings:
// the fourth, about 5 to 10 seconds in with the default backoff.
const noTokenEscalation = 4

// failed records a failed attempt and says how long to back off.
func (k *keeper) failed(err error) time.Duration {
	k.failures++
	var retryAfter time.Duration
	var ee *endpointError
	var be *budgetError
	switch {
	case errors.As(err, &ee):
		retryAfter = ee.RetryAfter
	case errors.As(err, &be):
		retryAfter = be.until.Sub(k.clock.Now()) // beyond maxRetryAfter if need be
	}
	wait := retryDelay(k.failures, k.cfg.RetryMax, retryAfter, k.rand())
	// Upstream text (Vault's errors, TLS and DNS errors, the endpoint's
	// fields) is cleaned once, here, before it reaches ERR lines,
	// STATUS= and the log.
	msg := proto.Clean(err.Error())
	k.state.Store(&keeperState{err: msg, next: k.clock.Now().Add(wait), failures: k.failures, lastSuccess: k.lastSuccess})
	ev := k.log.Warn()
	if k.lastSuccess.IsZero() && k.failures >= noTokenEscalation {
		// Never a token yet: whatever waits for one (READY=1, units
		// ordered after tokend) waits on this. Past a few tries it is not
		// a blip but an outage or a mistake, and an error.
		ev = k.log.Error().Str("hint", "no token obtained yet: check the token endpoint and the credentials (tokenctl status, journalctl -u tokend)")
	}
	if ee != nil && ee.rejected() {
		ev = k.log.Error().Str("hint", "the token endpoint rejects the client credentials read from vault; check the secret at "+k.cfg.Secret.String())
	}
	if ee != nil && ee.Description != "" {
		ev = ev.Str("error_description", ee.Description) // already redacted and cleaned
	}
	ev.Str("error", msg).Int("failures", k.failures).Dur("retry_in", wait.Round(time.Millisecond)).Msg("token refresh failed")
	return wait
}

// obtain reads the credentials and asks for a token. When the endpoint
// rejects the client, the secret is read again at once (it may have just
// been rotated) and the request retried if it changed.
func (k *keeper) obtain(ctx context.Context, cached bool) (grant, error) {
	creds := k.cached
	if !cached || creds.ID == "" {
		var err error
		if creds, err = k.credentials(ctx); err != nil {
			return grant{}, err
		}
	}
	g, err := k.fetch(ctx, creds)
	var ee *endpointError
	if errors.As(err, &ee) && ee.rejected() {
		k.log.Warn().Str("error", proto.Clean(err.Error())).Msg("client credentials rejected; reading them again from vault")
		fresh, verr := k.readVault(ctx)
		switch {
		case verr != nil:
			k.log.Warn().Err(verr).Msg("vault read failed; cannot check for rotated credentials")
		case fresh == creds:
			k.log.Error().Str("secret", k.cfg.Secret.String()).Msg("vault holds the same credentials the token endpoint rejects")
		default:
			k.log.Info().Msg("credentials changed in vault; retrying with them")
			creds = fresh
			g, err = k.fetch(ctx, creds)
		}
	}
	return g, err
}

// fetch makes one token request and reports it.
func (k *keeper) fetch(ctx context.Context, creds vaultsrc.Credentials) (grant, error) {
	tc := k.cfg
	if tc.Issuer != "" {
		if k.endpoint == "" {
			endpoint, err := discover(ctx, k.hc, &tc)
			if err != nil {
				return grant{}, fmt.Errorf("finding the token endpoint of issuer %s: %w", tc.Issuer, err)
			}
			k.log.Info().Str("issuer", tc.Issuer).Str("token_endpoint", endpoint).Msg("token endpoint discovered")
			k.endpoint = endpoint
		}
		tc.TokenURL = k.endpoint
	}
	if tc.ClientAuth == "tls_client_auth" {
		if err := k.useCertificate(creds); err != nil {
			return grant{}, err
		}
	}
	if tc.ClientAuth == "private_key_jwt" {
		// A fresh assertion per request: its jti is never sent twice.
		var err error
		if tc.TransitKey != "" {
			creds.Assertion, err = k.transitAssertion(ctx, &tc, creds.ID)
		} else {
			creds.Assertion, err = clientAssertion(&tc, tc.TokenURL, creds.ID, creds.Secret, creds.KeyID, time.Now())
		}
		if err != nil {
			return grant{}, err
		}
	}
	if ok, until := k.budget.take(k.clock.Now()); !ok {
		k.fetched(fetchBudget, 0)
		err := &budgetError{max: k.budget.max, until: until}
		if now := k.clock.Now(); now.Sub(k.budget.warned) >= budgetWindow {
			k.budget.warned = now
			k.log.Error().Int("max_fetches_per_hour", k.budget.max).Time("until", until.UTC()).
				Msg("issuance budget spent: no token requests until the window allows; the current token is served while it lasts")
		}
		return grant{}, err
	}
	start := time.Now()
	g, err := fetch(ctx, k.hc, &tc, creds)
	k.fetched(fetchResult(err), time.Since(start))
	if err != nil {
		k.endpoint = "" // the issuer may have moved it: read the metadata again
	}
	return g, err
}

// useCertificate makes the client certificate in creds the one the token
// requests present (tls_client_auth), when it changed.
func (k *keeper) useCertificate(creds vaultsrc.Credentials) error {
	if creds.Cert+creds.Secret == k.certOf {
		return nil
	}
	cert, err := tls.X509KeyPair([]byte(creds.Cert), []byte(creds.Secret))
	if err != nil {
		return fmt.Errorf("the client certificate and key in %s: %w", k.cfg.Secret, err)
	}
	k.cert.Store(&cert)
	k.certOf = creds.Cert + creds.Secret
	// Connections made with the old certificate would keep presenting it.
	if t, ok := k.hc.Transport.(*http.Transport); ok {
		t.CloseIdleConnections()
	}
	k.log.Info().Str("subject", cert.Leaf.Subject.String()).Time("not_after", cert.Leaf.NotAfter).Msg("client certificate loaded")
	return nil
}

// clientCertificate is the TLS client's GetClientCertificate.
func (k *keeper) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := k.cert.Load(); c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil // none yet: the handshake goes on without one
}

// transitAssertion has Vault Transit sign a fresh client assertion.
func (k *keeper) transitAssertion(ctx context.Context, tc *config.Fetch, clientID string) (string, error) {
	signer, ok := k.creds.(TransitSigner)
	if !ok {
		return "", fmt.Errorf("transit_key: the credential source cannot sign")
	}
	ctx, cancel := context.WithTimeout(ctx, vaultTimeout)
	defer cancel()
	if k.transitType == "" {
		keyType, err := signer.TransitKeyType(ctx, tc.TransitMount, tc.TransitKey)
		if err != nil {
			return "", err
		}
		k.transitType = keyType
	}
	alg, err := transitAlg(k.transitType, tc.AssertionAlg)
	if err != nil {
		return "", err
	}
	a, err := signedAssertion(tc, tc.TokenURL, clientID, tc.AssertionKID, alg, time.Now(), func(input []byte) ([]byte, error) {
		return signer.TransitSign(ctx, tc.TransitMount, tc.TransitKey, alg, input)
	})
	if err != nil {
		k.transitType = "" // the key may have been replaced: read its type again
	}
	return a, err
}

// fetchResult is the result label of a token request's outcome.
func fetchResult(err error) string {
	var ee *endpointError
	switch {
	case err == nil:
		return fetchSuccess
	case !errors.As(err, &ee):
		return fetchError
	case ee.rejected():
		return fetchRejected
	case ee.Status == http.StatusTooManyRequests:
		return fetchRateLimited
	}
	return fetchError
}

// credentials reads the secret from Vault, falling back to the last good
// credentials when Vault cannot answer quickly.
func (k *keeper) credentials(ctx context.Context) (vaultsrc.Credentials, error) {
	c, err := k.readVault(ctx)
	if err == nil {
		return c, nil
	}
	if k.cached.ID == "" {
		return c, fmt.Errorf("no client credentials yet: %w", err)
	}
	k.log.Warn().Err(err).Msg("vault read failed; using the credentials in memory")
	return k.cached, nil
}

func (k *keeper) readVault(ctx context.Context) (vaultsrc.Credentials, error) {
	timeout := vaultTimeout
	if k.share != nil {
		// A shared token's refresh also waits on Vault for the entry: every
		// step must fit the slack the lease leaves (shareSlack).
		timeout = k.share.vaultTimeout()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := k.creds.Read(ctx, k.cfg.Secret)
	if err != nil {
		return c, err
	}
	if k.cached.ID != "" && c != k.cached {
		k.log.Info().Str("client_id", c.ID).Msg("client credentials changed in vault")
	}
	k.cached = c
	return c, nil
}

// wedged reports whether an attempt has run far longer than its deadlines
// allow, which means the loop is stuck (for the watchdog).
func (k *keeper) wedged(now time.Time) bool {
	since := k.busySince.Load()
	return since != 0 && now.Sub(time.Unix(0, since)) > k.stuckAfter()
}

// stuckAfter is how long an attempt may take before it counts as stuck:
// well past the sum of its deadlines.
func (k *keeper) stuckAfter() time.Duration {
	const (
		tries  = 2 // a token request, and one more after a 401 and a fresh read
		reads  = 2 // a Vault read before each try
		logins = 3 // a Vault login before the first read, and after a 403 on either
		shared = 3 // share_path: the entry's read, the lease's write and the token's
		margin = 10 * time.Second
	)
	return tries*k.cfg.RequestTimeout + (reads+logins+shared)*vaultTimeout + margin
}
