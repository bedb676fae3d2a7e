package tokens

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/oauth"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/vaultsrc"
)

// Sharing one token between hosts (share_path). The hosts configured with
// the same share_path keep one token in a Vault KV v2 entry. Each host
// reads the entry at its own jittered point; when the token there is due,
// one host takes a lease by a check-and-set write, asks the token endpoint
// and writes the new token back, and the others read it. Vault is the only
// coordinator: no host talks to another.
//
// The shared token is refreshed late, so that the fleet asks for about one
// token per lifetime: shareSlack request timeouts before it falls under
// min_remaining, room for a lease holder to die (its lease lasts two) and
// another to take over and ask. A host never waits for sharing past the
// point where one request of its own still fits: then it fetches for
// itself, and says so.

const (
	// shareSlack is how many request timeouts before min_remaining the
	// shared token is due: a lease (2) that may expire unused, another
	// host's request (1), and room for the hosts' read jitter (shareSpread)
	// and re-reads.
	shareSlack = 6
	// shareSpread: hosts read a due entry spread over this many request
	// timeouts after it falls due, so that a fleet does not read at once.
	shareSpread = 2
	// shareLease is the lease's length in request timeouts.
	shareLease = 2
)

// The results of reading the entry (tokend_share_reads_total).
const (
	shareFresh    = "fresh"    // the entry's token is served
	shareDue      = "due"      // it is due: this host takes the lease, or publishes its own
	shareLeased   = "leased"   // another host holds the lease: wait for its token
	shareError    = "error"    // Vault did not answer, or a write failed
	shareMismatch = "mismatch" // the entry is for another token configuration
)

// ShareResults are the read results, for metrics.
var ShareResults = []string{shareFresh, shareDue, shareLeased, shareError, shareMismatch}

// sharer is one token's side of sharing. Its step runs in the keeper's
// run loop (and in the fleet simulation, against stand-ins).
type sharer struct {
	mount, path string
	id          string // lease_holder and fetched_by
	config      string
	scope       string
	jitter      float64 // this host's place in the fallback window, in [0,1)
	policy      sharePolicy
	store       EntryStore
	rand        func() float64
	log         zerolog.Logger
	obs         Observer

	longest    time.Duration // the longest lifetime the endpoint gave this host
	waitSince  time.Time     // when this host, without a token, began to wait for a lease holder
	troubles   int           // consecutive steps that could not share
	since      time.Time     // when the current troubles began
	failedLast bool          // the last step could not use Vault, and waits to try again
}

// newSharer is the side of sharing of the token cfg describes; id names
// this host in the entry, which store holds.
func newSharer(cfg config.Fetch, id string, store EntryStore, obs Observer, rand func() float64, log zerolog.Logger) *sharer {
	s := &sharer{
		mount: cfg.ShareMount, path: cfg.SharePath, id: id, config: shareConfig(&cfg), scope: cfg.Scope,
		policy: newSharePolicy(cfg.MinRemaining, cfg.RequestTimeout, cfg.RetryMax),
		store:  store, rand: rand, jitter: rand(), obs: obs,
		log: log.With().Str("share_path", cfg.ShareMount+"/"+cfg.SharePath).Logger(),
	}
	s.log.Info().Str("instance", s.id).Msg("sharing this token through vault")
	return s
}

// fetchFunc asks the token endpoint for this host; cached says to use the
// credentials in memory rather than wait for Vault first.
type fetchFunc func(ctx context.Context, cached bool) (g oauth.Grant, sent time.Time, err error)

// shareResult is what a step decided.
type shareResult struct {
	tok     *shared   // the token to serve from now: read from the entry or fetched; nil: keep the current one
	fetched bool      // this host asked the token endpoint; err is the outcome
	err     error     // the token request failed
	next    time.Time // when to step again; when err is nil
	problem string    // why no fresh token came, while waiting (STATUS, the log)
}

// step reads the entry and acts on it: serve its token, wait for another
// host's, or take the lease and fetch. mine is the token this host
// serves (nil before the first); forced is a refresh min= asked for. What
// to do is decide's choice; step only does the I/O around it.
func (s *sharer) step(ctx context.Context, now time.Time, mine *shared, forced bool, fetch fetchFunc) shareResult {
	if s.failedLast && mine != nil && !now.Before(s.policy.troubleAt(*mine, s.jitter)) {
		// Vault failed at the last step, and there is no time left to
		// wait for it once more (a read of a Vault that hangs takes its
		// timeout): fetch now.
		return s.fallBack(ctx, errors.New("vault did not answer in time"), fetch)
	}
	rctx, cancel := context.WithTimeout(ctx, s.vaultTimeout())
	fields, version, err := s.store.ReadEntry(rctx, s.mount, s.path)
	cancel()
	if err != nil {
		s.obs.ShareRead(shareError)
		return s.trouble(ctx, now, mine, err, fetch)
	}
	e := s.vet(now, parseShared(fields))
	if mine != nil {
		s.waitSince = time.Time{}
	}
	if (e.Config != "" || e.Token != "" || e.LeaseHolder != "") && e.Config != s.config {
		s.obs.ShareRead(shareMismatch)
		return s.trouble(ctx, now, mine, fmt.Errorf("the entry at %s/%s holds a token for another configuration (%s, this host's is %s): every host sharing it needs the same token_url or issuer, scope, audience, resource, extra_params and kv path",
			s.mount, s.path, e.Config, s.config), fetch)
	}
	switch s.decide(now, e, mine, forced) {
	case serveEntry:
		s.obs.ShareRead(shareFresh)
		s.recovered(now)
		r := shareResult{next: s.policy.readAt(e, s.rand())}
		if mine == nil || e.Token != mine.Token {
			r.tok = &e
		}
		return r
	case offerMine:
		return s.offer(ctx, now, e, *mine, version)
	case awaitHolder:
		return s.await(ctx, now, e, mine, version, fetch)
	}
	return s.takeLease(ctx, now, e, mine, version, fetch)
}

// shareAction is what a step does with the entry it read.
type shareAction int

const (
	serveEntry  shareAction = iota // the entry's token is fresh: serve it
	offerMine                      // this host's own token is fresher: offer it to the others
	awaitHolder                    // another host holds the lease: wait for its token
	takeLease                      // the token is due and free: take the lease and fetch
)

// decide is a step's choice, a pure function of the entry, this host's
// token and the time.
func (s *sharer) decide(now time.Time, e shared, mine *shared, forced bool) shareAction {
	newer := e.Token != "" && (mine == nil || e.ExpiresAt.After(mine.ExpiresAt))
	same := mine != nil && e.Token == mine.Token
	switch {
	case e.Token != "" && now.Before(s.policy.due(e)) && (newer || same && !forced):
		return serveEntry
	case mine != nil && now.Before(s.policy.due(*mine)) && !forced:
		return offerMine
	case s.heldByOther(now, e):
		return awaitHolder
	}
	return takeLease
}

// heldByOther reports whether the entry's lease keeps this host from
// taking it. A lease after failures is the fleet's backoff: it holds for
// its holder too. A lease longer than any this host would believe is
// expired.
func (s *sharer) heldByOther(now time.Time, e shared) bool {
	return e.LeaseHolder != "" && now.Before(e.LeaseUntil) && !e.LeaseUntil.After(now.Add(s.policy.maxLease())) &&
		(e.LeaseHolder != s.id || e.Failures > 0)
}

// offer shares this host's own token (fetched in a fallback), fresher
// than the entry's, unless another host holds the lease to refresh it.
func (s *sharer) offer(ctx context.Context, now time.Time, e, mine shared, version int) shareResult {
	s.obs.ShareRead(shareDue)
	s.recovered(now)
	// A lease after failures does not stop it: a fresh token says the
	// endpoint answers again, and ends the fleet's backoff.
	if !s.heldByOther(now, e) || e.Failures > 0 {
		pub := mine
		pub.Config, pub.LeaseHolder, pub.LeaseUntil, pub.Failures, pub.LastError = s.config, "", time.Time{}, 0, ""
		if _, err := s.write(ctx, pub, version); err == nil {
			s.log.Info().Time("expires_at", pub.ExpiresAt.UTC()).Msg("shared this host's token")
		}
	}
	return shareResult{next: s.policy.readAt(mine, s.rand())}
}

// await waits for the lease holder's token, serving the entry's when it
// is better than this host's, and falls back when none comes in time.
func (s *sharer) await(ctx context.Context, now time.Time, e shared, mine *shared, version int, fetch fetchFunc) shareResult {
	s.obs.ShareRead(shareLeased)
	s.recovered(now)
	r := shareResult{}
	held := mine
	newer := e.Token != "" && (mine == nil || e.ExpiresAt.After(mine.ExpiresAt))
	if newer && now.Before(e.ExpiresAt.Add(-s.policy.minRemaining)) {
		r.tok, held = &e, &e // better than nothing, or than mine
	}
	// Every wait the entry sets ends at this host's own fallback point:
	// the point for the token it holds, or, without one, a lease's
	// length after it began to wait.
	// While the holders fail at the endpoint (the fleet's backoff), the
	// hosts' points are spread from the due point to the last request
	// that fits, as when Vault fails, so that they do not all ask at
	// once; they ask with the credentials in memory, the entry's read
	// having just been Vault's work for this step.
	fb := s.waitSince.Add(s.policy.noTokenWait())
	switch {
	case held != nil && e.Failures > 0:
		fb = s.policy.troubleAt(*held, s.jitter)
	case held != nil:
		fb = s.fallbackAt(*held)
	case s.waitSince.IsZero():
		s.waitSince = now
		fb = now.Add(s.policy.noTokenWait())
	}
	if !now.Before(fb) {
		r := s.fallBackCached(ctx, fmt.Errorf("%s holds the lease until %s and no token has come", e.LeaseHolder, e.LeaseUntil.UTC().Format(time.RFC3339)), fetch, true)
		if r.err == nil && r.tok != nil {
			// The endpoint answers this host: give the others its token
			// now (check-and-set on this step's read), and end the
			// fleet's backoff.
			pub := *r.tok
			pub.Config = s.config
			if _, err := s.write(ctx, pub, version); err == nil {
				s.log.Info().Time("expires_at", pub.ExpiresAt.UTC()).Msg("shared this host's token")
			}
		}
		return r
	}
	switch {
	case e.Failures > 0:
		// The token endpoint fails for the lease holders: a request
		// of this host's own would not fare better, and a fleet
		// asking at once is what the backoff prevents.
		r.problem = fmt.Sprintf("the token endpoint failed for the hosts refreshing the shared token (%d in a row; last from %s): %s",
			e.Failures, e.LeaseHolder, e.LastError)
		r.next = e.LeaseUntil.Add(time.Duration(s.rand() * float64(s.policy.timeout)))
	case held == nil:
		// Nothing to serve yet (a fleet starting): the holder's
		// token comes soon, or its lease expires.
		r.next = s.poll(now)
	default:
		r.next = s.soon(now, *held)
	}
	if r.next.After(fb) {
		r.next = fb
	}
	return r
}

// poll is when a host without a token reads the entry again while
// another holds the lease: soon, since a token endpoint mostly answers in
// a fraction of request_timeout, and less often the longer it has
// waited (doubling from 100 ms, jittered), up to a quarter to a half of
// request_timeout, so that a starting fleet does not hammer Vault.
func (s *sharer) poll(now time.Time) time.Time {
	waited := max(now.Sub(s.waitSince), 100*time.Millisecond)
	d := min(time.Duration((0.5+0.5*s.rand())*float64(waited)), time.Duration((0.25+0.25*s.rand())*float64(s.policy.timeout)))
	return now.Add(d)
}

// takeLease writes this host's lease with check-and-set, asks the token
// endpoint, and shares the answer (or the failure, as the fleet's
// backoff).
func (s *sharer) takeLease(ctx context.Context, now time.Time, e shared, mine *shared, version int, fetch fetchFunc) shareResult {
	s.obs.ShareRead(shareDue)
	lease := e
	lease.Config, lease.LeaseHolder, lease.LeaseUntil = s.config, s.id, now.Add(shareLease*s.policy.timeout)
	version, err := s.write(ctx, lease, version)
	if errors.Is(err, vaultsrc.ErrConflict) {
		// Another host wrote first: read again soon, and see what it did.
		if mine == nil {
			if s.waitSince.IsZero() {
				s.waitSince = now
			}
			return shareResult{next: s.poll(now)}
		}
		if !now.Before(s.fallbackAt(*mine)) {
			return s.fallBack(ctx, err, fetch)
		}
		return shareResult{next: s.soon(now, *mine)}
	}
	if err != nil {
		return s.trouble(ctx, now, mine, err, fetch)
	}
	s.recovered(now)
	s.obs.ShareLeased()
	s.log.Info().Str("lease_holder", s.id).Time("lease_until", lease.LeaseUntil.UTC()).Msg("took the share lease; asking the token endpoint")
	g, sent, err := fetch(ctx, false)
	if err != nil {
		// The lease becomes the fleet's backoff: no host asks before it
		// expires, so that while the endpoint fails the fleet asks like
		// one host.
		var ee *oauth.EndpointError
		var retryAfter time.Duration
		if errors.As(err, &ee) {
			retryAfter = ee.RetryAfter
		}
		lease.Failures++
		lease.LastError = proto.Clean(err.Error())
		lease.LeaseUntil = now.Add(max(shareLease*s.policy.timeout, retryDelay(lease.Failures, s.policy.retryMax, retryAfter, s.rand())))
		if _, werr := s.write(ctx, lease, version); werr != nil {
			s.log.Warn().Str("error", proto.Clean(werr.Error())).Msg("could not record the failed request in the shared entry")
		}
		return shareResult{fetched: true, err: err}
	}
	s.gave(g.Lifetime)
	t := shared{Token: g.AccessToken, Type: g.TokenType, Scope: s.scope, FetchedAt: sent, ExpiresAt: sent.Add(g.Lifetime),
		FetchedBy: s.id, Config: s.config}
	if _, err := s.write(ctx, t, version); err != nil {
		s.log.Warn().Str("error", proto.Clean(err.Error())).Msg("could not share the new token; serving it on this host")
	}
	return shareResult{tok: &t, fetched: true, next: s.policy.readAt(t, s.rand())}
}

// soon is a short jittered wait for another host's token, never past the
// point where this host must fall back.
func (s *sharer) soon(now time.Time, held shared) time.Time {
	next := now.Add(time.Duration((0.5 + 0.5*s.rand()) * float64(s.policy.timeout)))
	if fb := s.fallbackAt(held); next.After(fb) {
		next = fb
	}
	return next
}

// fallbackAt is this host's fallback point for t.
func (s *sharer) fallbackAt(t shared) time.Time { return s.policy.fallbackAt(t, s.jitter) }

// trouble handles a step that could not share (Vault failed, a foreign
// entry): keep serving what this host has and try again with backoff, up
// to the fallback point; then fetch for this host.
func (s *sharer) trouble(ctx context.Context, now time.Time, mine *shared, err error, fetch fetchFunc) shareResult {
	if s.troubles == 0 {
		s.since = now
		s.log.Warn().Str("error", proto.Clean(err.Error())).Msg("cannot share the token; serving the current one and trying again")
	}
	s.troubles++
	s.failedLast = true
	if mine == nil || !now.Before(s.policy.troubleAt(*mine, s.jitter)) {
		return s.fallBack(ctx, err, fetch)
	}
	// Not sooner than a request timeout: a fleet retrying a Vault that
	// is down must not add to its troubles.
	next := now.Add(time.Duration((1 + s.rand()) * float64(s.policy.timeout)))
	if fb := s.policy.troubleAt(*mine, s.jitter); next.After(fb) {
		next = fb
	}
	return shareResult{next: next}
}

// fallBack fetches for this host alone.
func (s *sharer) fallBack(ctx context.Context, why error, fetch fetchFunc) shareResult {
	return s.fallBackCached(ctx, why, fetch, s.troubles > 0)
}

// fallBackCached is fallBack, with the credentials in memory when cached
// says so: when Vault is in trouble, or was read at this step already.
func (s *sharer) fallBackCached(ctx context.Context, why error, fetch fetchFunc, cached bool) shareResult {
	s.failedLast = false
	s.obs.FellBack()
	s.log.Warn().Str("error", proto.Clean(why.Error())).Msg("sharing failed; fetching a token for this host alone")
	g, sent, err := fetch(ctx, cached)
	if err != nil {
		return shareResult{fetched: true, err: err}
	}
	s.gave(g.Lifetime)
	t := shared{Token: g.AccessToken, Type: g.TokenType, Scope: s.scope, FetchedAt: sent, ExpiresAt: sent.Add(g.Lifetime), FetchedBy: s.id}
	return shareResult{tok: &t, fetched: true, next: s.policy.readAt(t, s.rand())}
}

// recovered ends a run of troubles.
func (s *sharer) recovered(now time.Time) {
	s.failedLast = false
	if s.troubles > 0 {
		s.log.Info().Dur("after", now.Sub(s.since)).Msg("sharing the token again")
	}
	s.troubles = 0
}

func (s *sharer) write(ctx context.Context, t shared, cas int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.vaultTimeout())
	defer cancel()
	return s.store.WriteEntry(ctx, s.mount, s.path, t.fields(), cas)
}

// vaultTimeout bounds each Vault request of a step.
func (s *sharer) vaultTimeout() time.Duration { return s.policy.vault }
