package tokens

import "time"

// Refresh timing. Pure functions of their inputs (rnd is uniform in [0,1)),
// so the policy is tested without clocks or networks.

const (
	minRefreshDelay = time.Second            // never refresh in a tight loop
	backoffBase     = 500 * time.Millisecond // first retry ceiling
	backoffFloor    = 100 * time.Millisecond
	maxRetryAfter   = 5 * time.Minute // honour Retry-After, but not forever
)

// refreshAfter says how long after a token request was sent to ask for the
// next one: at 75–80% of the lifetime (jittered so a fleet does not refresh
// in step), but early enough that the new token arrives, a request timeout
// later, before the old one falls under minRemaining.
func refreshAfter(lifetime, minRemaining, timeout time.Duration, rnd float64) time.Duration {
	d := time.Duration(float64(lifetime) * (0.75 + 0.05*rnd))
	usable := lifetime - minRemaining
	latest := usable - min(timeout, usable/2)
	if d > latest {
		d = time.Duration(float64(latest) * (0.95 + 0.05*rnd))
	}
	return max(d, minRefreshDelay)
}

// backoff is "full jitter" exponential backoff: a uniform delay under a
// ceiling that doubles per failed attempt (1, 2, …) up to retryMax.
func backoff(attempt int, retryMax time.Duration, rnd float64) time.Duration {
	ceiling := retryMax
	if attempt < 30 {
		ceiling = min(retryMax, backoffBase<<(attempt-1))
	}
	return max(time.Duration(rnd*float64(ceiling)), min(backoffFloor, ceiling))
}

// retryDelay combines backoff with a server's Retry-After.
func retryDelay(attempt int, retryMax, retryAfter time.Duration, rnd float64) time.Duration {
	return max(backoff(attempt, retryMax, rnd), min(retryAfter, maxRetryAfter))
}
