package tokens

import (
	"cmp"
	"context"
	"time"

	"github.com/tokend/tokend/socket/proto"
)

// A keeper's side of sharing: whether its tokens can be shared at all,
// and an attempt through the shared entry.

// shareFits reports whether the tokens the endpoint issues live long
// enough to share: a host that shares must be at least as available as
// one alone, and with short tokens the shared schedule (a lease, other
// hosts' reads) cannot fit before min_remaining. Then this host fetches
// on its own schedule, and says so once.
func (k *Keeper) shareFits() bool {
	lt := time.Duration(k.lifetime.Load())
	fits := lt == 0 || k.share.policy.fits(lt)
	if fits == k.shareUnfit {
		k.shareUnfit = !fits
		if fits {
			k.log.Info().Dur("lifetime", lt).Msg("tokens live long enough to share again; sharing")
		} else {
			k.log.Warn().Dur("lifetime", lt).Dur("min_remaining", k.cfg.MinRemaining).Dur("request_timeout", k.cfg.RequestTimeout).
				Msg("tokens are too short to share (a quarter of their life must exceed min_remaining and 6 request timeouts): this host fetches its own; to share them, lower request_timeout or min_remaining")
		}
	}
	return fits
}

// attemptShared is an attempt through the shared entry (share_path).
func (k *Keeper) attemptShared(ctx context.Context, forced bool) time.Duration {
	var mine *shared
	if t := k.tok.Load(); t != nil {
		mine = &shared{Token: t.Value, Type: t.Type, Scope: t.Scope, ExpiresAt: t.ExpiresAt,
			FetchedAt: t.ExpiresAt.Add(-time.Duration(k.lifetime.Load()))}
	}
	r := k.share.step(ctx, k.clock.Now(), mine, forced, k.fetchFor)
	if r.err != nil {
		return k.failed(r.err)
	}
	if t := cmp.Or(r.tok, mine); t != nil && !k.share.policy.fits(t.lifetime()) {
		// The first token tells the lifetime: too short to share, the
		// next attempt comes on this host's own schedule (where
		// shareFits says so), not the entry's late one.
		own := t.FetchedAt.Add(refreshAfter(t.lifetime(), k.cfg.MinRemaining, k.cfg.RequestTimeout, k.rand()))
		if own.Before(r.next) {
			r.next = own
		}
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
		if _, err := k.readCreds(ctx); err != nil {
			k.log.Warn().Err(err).Msg(k.cfg.Source() + " read of the client credentials failed; keeping those in memory")
		}
	}
	return max(r.next.Sub(k.clock.Now()), 0)
}
