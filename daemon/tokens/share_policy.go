package tokens

import "time"

// sharePolicy is the timing of sharing. Pure, like schedule.go.
type sharePolicy struct {
	minRemaining, timeout, retryMax time.Duration
	// vault bounds each Vault request of a step: a request timeout, so
	// that a slow Vault cannot hold a host far past its fallback point,
	// but at least a second, so that a busy Vault is not taken for a dead
	// one when request timeouts are short.
	vault time.Duration
}

// The shared token's schedule, as pure functions of the entry and the
// host's settings: when it is due, when to read it again, when to fall
// back to fetching alone.

// The entry is written by other hosts, and any host that shares it could
// write anything there, or have a clock far ahead. What it says is
// believed only within these bounds.
const (
	// clockSkew is how far apart hosts' clocks may be: a lease or a
	// fetched_at up to that far ahead of this host's clock is believed.
	clockSkew = 10 * time.Second
	// maxSharedLifetime caps the lifetime an entry may claim until this
	// host has seen the endpoint's own: client-credentials tokens rarely
	// live longer than a day.
	maxSharedLifetime = 24 * time.Hour
	// maxTokenLen is the longest token served from the entry.
	maxTokenLen = 64 << 10
)

// maxLease is the longest lease this host believes: a lease's own length,
// or a failed request's backoff (retry_max, or Retry-After's cap), plus
// the clocks' skew. A longer one is a forgery or a clock far ahead, and
// is treated as expired.
func (p sharePolicy) maxLease() time.Duration {
	return max(shareLease*p.timeout, p.retryMax, maxRetryAfter) + clockSkew
}

// noTokenWait is how long a host without a token waits for another
// host's lease before it fetches for itself: one lease and the skew.
func (p sharePolicy) noTokenWait() time.Duration { return shareLease*p.timeout + clockSkew }

// fits reports whether tokens of lifetime leave the shared schedule its
// slack: the due point a quarter of the life before expiry (as alone)
// still lies shareSlack request timeouts before min_remaining.
func (p sharePolicy) fits(lifetime time.Duration) bool {
	return lifetime/4 >= p.minRemaining+shareSlack*p.timeout
}

func newSharePolicy(minRemaining, timeout, retryMax time.Duration) sharePolicy {
	return sharePolicy{minRemaining: minRemaining, timeout: timeout, retryMax: retryMax,
		vault: min(max(timeout, time.Second), vaultTimeout)}
}

// last is the last point at which a host holding t may decide to fetch
// for itself: one request must fit before min_remaining. (A host whose
// Vault failed decides without reading it again: see step.)
func (p sharePolicy) last(t shared) time.Time {
	return t.ExpiresAt.Add(-p.minRemaining - p.timeout)
}

// due is when a shared token is to be replaced: late, but never earlier
// than one host would refresh its own.
func (p sharePolicy) due(t shared) time.Time {
	early := t.FetchedAt.Add(refreshAfter(t.lifetime(), p.minRemaining, p.timeout, 0))
	late := t.ExpiresAt.Add(-p.minRemaining - shareSlack*p.timeout)
	if late.After(early) {
		return late
	}
	return early
}

// readAt is when a host reads the entry again, holding t: at the token's
// due point, plus this host's jitter.
func (p sharePolicy) readAt(t shared, rnd float64) time.Time {
	return p.due(t).Add(time.Duration(rnd * float64(shareSpread*p.timeout)))
}

// fallbackAt is when a host holding t stops waiting for another's lease:
// jittered over half a request timeout before the last point, so that a
// fleet whose lease holder vanished does not fall back at once. It comes
// after a lease taken at the due point has expired and another host had
// time for a re-read and a request.
func (p sharePolicy) fallbackAt(t shared, rnd float64) time.Time {
	return p.last(t).Add(-time.Duration(0.5 * rnd * float64(p.timeout)))
}

// troubleAt is the fallback point when Vault cannot be used: no other
// host can refresh the token then either, so the fleet's hosts fall back
// spread over everything from the due point to the last request that
// fits, rather than all in the lease's short window.
func (p sharePolicy) troubleAt(t shared, rnd float64) time.Time {
	due, last := p.due(t), p.last(t)
	return due.Add(time.Duration(rnd * float64(max(last.Sub(due), 0))))
}
