package tokens

import (
	"context"
	"fmt"
	"time"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/socket/proto"
)

// What clients ask a keeper: the token now, one with min= left, and the
// state STATUS and the metrics show. None of it waits on the network while
// a token is servable.

// snapshot is a keeper as STATUS=, error answers and metrics report it.
type Snapshot struct {
	Token       *proto.Token // nil before the first token
	Servable    bool         // Token has at least min_remaining left
	Err         string       // the last attempt's error; "" after a success
	Next        time.Time    // when the next attempt is due; zero before the first ends
	Failures    int          // consecutive failed attempts
	LastSuccess time.Time
	Source      string // where the client credentials come from: "vault" or "file"
}

// Snapshot reads the keeper's state at now.
func (k *Keeper) Snapshot(now time.Time) Snapshot {
	t := k.tok.Load()
	s := Snapshot{Token: t, Servable: k.servable(t, now), Source: k.cfg.Source()}
	if st := k.state.Load(); st != nil {
		s.Err, s.Next, s.Failures, s.LastSuccess = st.err, st.next, st.failures, st.lastSuccess
	}
	return s
}

// state is the token's state as STATUS and /healthz report it.
func (s Snapshot) State() string {
	switch {
	case !s.Servable:
		return proto.StateUnavailable
	case s.Err != "":
		return proto.StateDegraded
	}
	return proto.StateOK
}

// status is the snapshot as the STATUS verb answers it.
func (s Snapshot) Status(name string, now time.Time) proto.Status {
	st := proto.Status{Name: name, State: s.State(), ExpiresIn: proto.Unknown, RefreshIn: proto.Unknown,
		Failures: s.Failures, LastSuccess: s.LastSuccess, LastError: s.Err, Source: s.Source}
	if s.Token != nil {
		st.ExpiresIn = int64(max(s.Token.ExpiresAt.Sub(now), 0) / time.Second)
	}
	if !s.Next.IsZero() {
		st.RefreshIn = int64(max(s.Next.Sub(now), 0) / time.Second)
	}
	return st
}

// why says what the keeper is waiting for.
func (s Snapshot) Why() string {
	if s.Err != "" {
		return s.Err
	}
	if s.Token != nil {
		return "refresh in progress"
	}
	return "first request in progress"
}

// get returns the current token if it has at least min_remaining left. A
// request that comes before the first token waits up to wait for it.
func (k *Keeper) Get(ctx context.Context, wait time.Duration) (proto.Token, error) {
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
	if perr := k.Unservable(t, now); perr != nil {
		return proto.Token{}, perr
	}
	return *t, nil
}

// unservable says why t cannot be served at now; nil when it can.
func (k *Keeper) Unservable(t *proto.Token, now time.Time) *proto.Error {
	switch {
	case t == nil:
		return &proto.Error{Code: proto.CodeUnavailable, Msg: "no token yet: " + k.Snapshot(now).Why()}
	case !k.servable(t, now):
		return &proto.Error{Code: proto.CodeUnavailable, Msg: fmt.Sprintf(
			"token %s has %ds left, under min_remaining %s: %s", k.cfg.Name, int64(t.ExpiresAt.Sub(now)/time.Second), k.cfg.MinRemaining, k.Snapshot(now).Why())}
	}
	return nil
}

// GetFresh is Get for a token with at least min left (min=). When the
// current one has less, the keeper refreshes now, or the request joins
// the attempt in flight, and waits up to freshWait. Early refreshes are
// forced at most once per forceEvery per token.
func (k *Keeper) GetFresh(ctx context.Context, wait, min time.Duration) (proto.Token, error) {
	if lt := time.Duration(k.lifetime.Load()); lt <= min && lt > 0 {
		if t, err := k.Get(ctx, wait); err != nil || t.ExpiresAt.Sub(k.clock.Now()) >= min {
			return t, err
		}
		return proto.Token{}, &proto.Error{Code: proto.CodeUnavailable,
			Msg: fmt.Sprintf("token %s cannot have min=%d: the token endpoint issues tokens for %s", k.cfg.Name, int(min/time.Second), lt)}
	}
	return k.getNewer(ctx, wait, fmt.Sprintf("with %ds left", int(min/time.Second)), "min=",
		func(t *proto.Token, now time.Time) bool { return k.Left(t, now) >= min })
}

// Proof is a fresh DPoP proof for method and url, bound to the token
// served now (ath) and carrying the url's origin's latest nonce: what a
// program that calls the API itself sends beside the token (PROOF).
func (k *Keeper) Proof(ctx context.Context, wait time.Duration, method, url string) (string, error) {
	if k.dpop == nil {
		return "", &proto.Error{Code: proto.CodeBadRequest, Msg: fmt.Sprintf("token %s is not a DPoP token (dpop = true in its [token.%s])", k.cfg.Name, k.cfg.Name)}
	}
	t, err := k.Get(ctx, wait)
	if err != nil {
		return "", err
	}
	return k.ProofFor(t.Value, method, url)
}

// ProofFor is a DPoP proof for method and url bound to token, a token
// this keeper served (the proxy's, which sends that token with it).
func (k *Keeper) ProofFor(token, method, url string) (string, error) {
	if k.dpop == nil {
		return "", &proto.Error{Code: proto.CodeBadRequest, Msg: fmt.Sprintf("token %s is not a DPoP token (dpop = true in its [token.%s])", k.cfg.Name, k.cfg.Name)}
	}
	proof, err := k.dpop.Proof(method, url, token, time.Now())
	if err != nil {
		return "", &proto.Error{Code: proto.CodeBadRequest, Msg: err.Error()}
	}
	return proof, nil
}

// DPoPNonce keeps a nonce a resource server gave (a DPoP-Nonce header
// on its answer to url), for the next proofs to it.
func (k *Keeper) DPoPNonce(url, nonce string) {
	if k.dpop != nil {
		k.dpop.SetNonce(url, nonce)
	}
}

// GetReplacing is Get for a token other than rejected, which an API
// refused (the proxy's 401 invalid_token): a refresh is forced as by
// min=, at most once per forceEvery, unless a newer token is there.
func (k *Keeper) GetReplacing(ctx context.Context, wait time.Duration, rejected string) (proto.Token, error) {
	return k.getNewer(ctx, wait, "other than the one the API rejected", "an API rejected the token",
		func(t *proto.Token, _ time.Time) bool { return t.Value != rejected })
}

// getNewer returns the current token when enough says it will do, and
// otherwise forces a refresh (or joins one) and waits for one that does.
// want and why say what was wanted, for the errors and the log.
func (k *Keeper) getNewer(ctx context.Context, wait time.Duration, want, why string, enough func(*proto.Token, time.Time) bool) (proto.Token, error) {
	t, err := k.Get(ctx, wait)
	now := k.clock.Now()
	if err != nil || enough(&t, now) {
		return t, err
	}
	unavailable := func(format string, args ...any) (proto.Token, error) {
		return proto.Token{}, &proto.Error{Code: proto.CodeUnavailable, Msg: fmt.Sprintf(format, args...)}
	}
	refused := func() (proto.Token, error) {
		return unavailable("token %s has %ds left; a token %s needs a refresh, and a refresh was forced less than %s ago (at most one per %s)",
			k.cfg.Name, int64(t.ExpiresAt.Sub(now)/time.Second), want, forceEvery, forceEvery)
	}
	wake := k.Next()
	// Join a refresh in flight, or one another client asked for already;
	// forcing is the gate, so that of clients arriving together one forces
	// and the others join.
	if k.busySince.Load() == 0 && k.forcing.CompareAndSwap(false, true) {
		if !k.mayForce(now) {
			k.refuseForce()
			return refused()
		}
		k.log.Info().Str("why", why).Msg("refreshing early: a client asked for a token " + want)
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
			return unavailable("gave up waiting for token %s %s: %v", k.cfg.Name, want, ctx.Err())
		case <-timer.C:
			return unavailable("no token %s %s within %s", k.cfg.Name, want, freshWait)
		}
		wake = k.Next()
		now = k.clock.Now()
		if t := k.tok.Load(); k.servable(t, now) && enough(t, now) {
			return *t, nil
		}
		if s := k.Snapshot(now); s.Err != "" {
			return unavailable("no token %s %s: %s", k.cfg.Name, want, s.Err)
		}
		if k.busySince.Load() == 0 && !k.forcing.Load() && k.forcedWithin(now) {
			// No refresh is on its way: the one this request joined was
			// refused (at most one per forceEvery), or it came and did
			// not bring enough. Say so now, not after freshWait.
			return refused()
		}
	}
}

// refuseForce ends a forced refresh that mayForce refused, and wakes the
// requests that joined it: none is coming.
func (k *Keeper) refuseForce() {
	k.forcing.Store(false)
	k.broadcast()
}

// forcedWithin reports whether a refresh was forced less than forceEvery
// before now.
func (k *Keeper) forcedWithin(now time.Time) bool {
	last := k.lastForced.Load()
	return last != 0 && now.Sub(time.Unix(0, last)) < forceEvery
}

// mayForce takes the right to force a refresh, once per forceEvery.
func (k *Keeper) mayForce(now time.Time) bool {
	last := k.lastForced.Load()
	if last != 0 && now.Sub(time.Unix(0, last)) < forceEvery {
		return false
	}
	return k.lastForced.CompareAndSwap(last, now.UnixNano())
}

// servable reports whether t exists and has at least min_remaining left.
func (k *Keeper) servable(t *proto.Token, now time.Time) bool {
	return t != nil && k.Left(t, now) >= k.cfg.MinRemaining
}

// Left is how long t has at now, the least of what the monotonic clock
// (now's reading) and the wall clock say: after a suspend the first lags.
func (k *Keeper) Left(t *proto.Token, now time.Time) time.Duration {
	return min(t.ExpiresAt.Sub(now), t.ExpiresAt.Round(0).Sub(k.clock.Wall()))
}

// Current is the token held now, servable or not; nil before the first.
func (k *Keeper) Current() *proto.Token { return k.tok.Load() }

// Config is the settings the keeper was built with. A reload keeps a
// keeper whose settings are equal (==) to the new ones.
func (k *Keeper) Config() config.Fetch { return k.cfg }
