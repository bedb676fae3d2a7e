// Package tokens keeps tokens fresh. A Keeper holds one: its run loop is
// the only writer and the only thing that talks to the network (through
// package oauth, with credentials from a CredentialSource), so there is
// exactly one token request in flight whatever the load, and readers
// never wait on the network while a servable token exists: they load an
// atomic pointer. The schedule (refresh at 75-80% of the lifetime,
// jittered; backoff with full jitter), the issuance budget, and sharing
// one token between hosts through a Vault entry (a pure decide and a
// short executor) live here too.
//
// It knows nothing of the socket server: what it hands out is the
// protocol's Token; it reports through an Observer.
package tokens

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/oauth"
	"github.com/tokend/tokend/socket/proto"
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

// clock is time as the keeper sees it, for all of its refresh timing:
// when a token was asked for and expires, when it is servable, when the
// next attempt is due, the budget's window. Tests drive a fake one. Real
// time stays for what is measured against the outside: how long a client
// waits (get, getFresh), how long a request took (the metrics), the JWT
// timestamps a server checks, and how long an attempt has run (the
// watchdog's wedge check, which the supervisor judges on its own clock).
//
// Go's monotonic clock, which Now's readings and the timers follow, does
// not advance while the machine is suspended (nor always while a VM is
// paused); the wall clock does. A token is servable only while both say
// it has min_remaining left, and Jumped wakes the run loop when the wall
// clock moves away from the monotonic one, so that the schedule catches up.
type clock interface {
	Now() time.Time  // with a monotonic reading
	Wall() time.Time // without one: counts a suspend
	After(d time.Duration) <-chan time.Time
	// Jumped is closed when the wall clock moves more than a second
	// away from the monotonic one; ask again for the next.
	Jumped() <-chan struct{}
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Wall() time.Time { return time.Now().Round(0) }

func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (realClock) Jumped() <-chan struct{} { return clockJumps.next() }

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
type Keeper struct {
	cfg   config.Fetch
	creds CredentialSource
	hc    *http.Client
	clock clock
	rand  func() float64
	log   zerolog.Logger
	obs   Observer

	tok       atomic.Pointer[proto.Token]
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
	// dpop holds the DPoP key (dpop = true); nil: bearer tokens.
	dpop *oauth.DPoP
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
	shareUnfit  bool // the tokens are too short to share: fetching alone
}

// keeperState is the outcome of the last attempt. The run loop replaces it
// whole, so readers see one attempt's values together.
type keeperState struct {
	err         string    // "" after a success
	next        time.Time // when the next attempt is due
	failures    int
	lastSuccess time.Time // zero before the first success
}

// Deps are what a keeper is built with, beside its settings.
type Deps struct {
	Creds CredentialSource
	// Client asks the token endpoint when the token needs no roots or
	// client certificate of its own; nil: a client of its own.
	Client   *http.Client
	Roots    *x509.CertPool // ca_file's roots; nil: the system's
	Observer Observer       // nil: nobody
	Log      zerolog.Logger
	clock    clock          // nil: the real one
	rand     func() float64 // nil: math/rand
	// ShareID names this host in a shared entry; store holds the entry.
	// Used with cfg.SharePath.
	ShareID    string
	ShareStore EntryStore
}

// New builds the keeper of the token cfg describes. It is started
// with Run.
func New(cfg config.Fetch, deps Deps) *Keeper {
	ch := make(chan struct{})
	k := &Keeper{
		cfg:    cfg,
		creds:  deps.Creds,
		hc:     deps.Client,
		clock:  deps.clock,
		rand:   deps.rand,
		obs:    deps.Observer,
		log:    deps.Log.With().Str("token", cfg.Name).Logger(),
		budget: budget{max: cfg.MaxPerHour},
		ready:  make(chan struct{}),
		kick:   make(chan struct{}, 1),
	}
	k.changes.Store(&ch)
	if k.clock == nil {
		k.clock = realClock{}
	}
	if k.rand == nil {
		k.rand = rand.Float64
	}
	if k.obs == nil {
		k.obs = nobody{}
	}
	if cfg.ClientAuth == "tls_client_auth" || deps.Roots != nil || k.hc == nil {
		var cert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)
		if cfg.ClientAuth == "tls_client_auth" {
			cert = k.ClientCertificate
		}
		k.hc = oauth.NewClient(deps.Roots, cert)
	}
	if cfg.SharePath != "" {
		k.share = newSharer(cfg, deps.ShareID, deps.ShareStore, k.obs, k.rand, k.log)
	}
	if cfg.DPoP {
		// The algorithm was checked with the configuration: only the
		// system's randomness can fail here, and then every request
		// fails with the reason.
		if dp, err := oauth.NewDPoP(cfg.DPoPAlg); err != nil {
			k.log.Error().Err(err).Msg("no DPoP key: token requests will fail")
		} else {
			k.dpop = dp
			k.log.Info().Str("alg", cfg.DPoPAlg).Str("jkt", dp.Thumbprint()).Msg("DPoP key made (in memory only): tokens are bound to it")
		}
	}
	return k
}

// next returns a channel closed when the next attempt ends.
func (k *Keeper) Next() <-chan struct{} { return *k.changes.Load() }

// broadcast wakes everyone waiting on next.
func (k *Keeper) broadcast() {
	ch := make(chan struct{})
	close(*k.changes.Swap(&ch))
}

// run refreshes the token until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	for {
		wait := k.attempt(ctx)
		k.obs.Attempted()
		k.broadcast()
		if !k.sleep(ctx, wait) {
			return
		}
	}
}

// sleep waits until the next attempt is due, by the monotonic clock or,
// after a jump (a suspend, a clock step), by the wall clock; false when
// ctx ended.
func (k *Keeper) sleep(ctx context.Context, wait time.Duration) bool {
	due := k.clock.Wall().Add(wait)
	for {
		select {
		case <-ctx.Done():
			return false
		case <-k.clock.After(wait):
			return true
		case <-k.kick:
			return true
		case <-k.clock.Jumped():
			if wait = due.Sub(k.clock.Wall()); wait <= 0 {
				k.log.Info().Msg("the wall clock jumped past the next refresh (a suspend or a clock step): refreshing now")
				return true
			}
		}
	}
}

// attempt makes one refresh attempt and says how long to wait for the next.
func (k *Keeper) attempt(ctx context.Context) time.Duration {
	k.busySince.Store(time.Now().UnixNano())
	defer k.busySince.Store(0)
	// This attempt answers every forced refresh asked so far (min=); busy
	// is set first, so that a client arriving now joins it.
	forced := k.forcing.Swap(false)
	select {
	case <-k.kick:
	default:
	}
	if k.share != nil && k.shareFits() {
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

// fetchFor asks the token endpoint for a token for this host; cached
// says to use the credentials in memory without asking Vault first.
func (k *Keeper) fetchFor(ctx context.Context, cached bool) (oauth.Grant, time.Time, error) {
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
func (k *Keeper) install(t shared, next time.Time, ev *zerolog.Event, msg string) {
	k.failures, k.lastSuccess = 0, k.clock.Now()
	k.tok.Store(&proto.Token{
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
func (k *Keeper) failed(err error) time.Duration {
	k.failures++
	var retryAfter time.Duration
	var ee *oauth.EndpointError
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
	if ee != nil && ee.Rejected() {
		ev = k.log.Error().Str("hint", "the token endpoint rejects the client credentials read from vault; check the secret at "+k.cfg.Secret.String())
	}
	if ee != nil && ee.Description != "" {
		ev = ev.Str("error_description", ee.Description) // already redacted and cleaned
	}
	ev.Str("error", msg).Int("failures", k.failures).Dur("retry_in", wait.Round(time.Millisecond)).Msg("token refresh failed")
	return wait
}

// wedged reports whether an attempt has run far longer than its deadlines
// allow, which means the loop is stuck (for the watchdog).
func (k *Keeper) Wedged(now time.Time) bool {
	since := k.busySince.Load()
	return since != 0 && now.Sub(time.Unix(0, since)) > k.stuckAfter()
}

// stuckAfter is how long an attempt may take before it counts as stuck:
// well past the sum of its deadlines.
func (k *Keeper) stuckAfter() time.Duration {
	const (
		tries  = 2 // a token request, and one more after a 401 and a fresh read
		reads  = 2 // a Vault read before each try
		logins = 3 // a Vault login before the first read, and after a 403 on either
		shared = 3 // share_path: the entry's read, the lease's write and the token's
		margin = 10 * time.Second
	)
	return tries*k.cfg.RequestTimeout + (reads+logins+shared)*vaultTimeout + margin
}
