package vaultsrc

import (
	"context"
	"time"

	"github.com/hashicorp/vault/api"
)

// Run keeps the Vault token alive until ctx ends: it renews it with the
// library's LifetimeWatcher and logs in again when it can no longer be
// renewed. Failures are logged and retried with backoff.
func (s *Source) Run(ctx context.Context) {
	delay := time.Second
	var sec *api.Secret
	force := false // the first time, a login done by a read counts
	for ctx.Err() == nil {
		if sec == nil {
			var err error
			if sec, _, err = s.loginOnce(ctx, force); err != nil {
				s.log.Warn().Err(s.scrub(err)).Dur("retry_in", delay.Round(time.Millisecond)).Msg("vault login failed")
				sec = s.await(ctx, time.After(delay)) // a read may log in meanwhile
				delay = min(2*delay, 30*time.Second)
				continue
			}
			delay = time.Second
		}
		sec = s.watch(ctx, sec)
		force = true
	}
}

// await waits for a login made on the read path (returned), ctx's end or
// until (both nil). A nil until waits without a limit.
func (s *Source) await(ctx context.Context, until <-chan time.Time) *api.Secret {
	select {
	case next := <-s.relogin:
		return next
	case <-ctx.Done():
	case <-until:
	}
	return nil
}

// watch blocks while sec's token is good. It returns the next login to
// watch, or nil when a new login is needed.
func (s *Source) watch(ctx context.Context, sec *api.Secret) *api.Secret {
	if s.cfg.Auth != "approle" {
		// A token from a file or the environment: ask Vault what it is.
		self, err := s.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			s.log.Warn().Err(compact(err)).Msg("vault token lookup failed; will retry")
			return s.await(ctx, time.After(30*time.Second))
		}
		ttl, _ := self.TokenTTL()
		renewable, _ := self.TokenIsRenewable()
		sec = &api.Secret{Auth: &api.SecretAuth{ClientToken: sec.Auth.ClientToken, Renewable: renewable, LeaseDuration: int(ttl / time.Second)}}
	}
	s.ready.Do(func() { s.log.Info().Str("address", s.Address()).Msg("vault source ready: Vault answered") })
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	switch {
	case !sec.Auth.Renewable && ttl == 0:
		// A token that never expires (e.g. a root token): nothing to do
		// until a read finds it revoked and logs in again.
		return s.await(ctx, nil)
	case !sec.Auth.Renewable:
		return s.await(ctx, time.After(ttl*2/3))
	}
	w, err := s.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: sec})
	if err != nil {
		s.log.Warn().Err(err).Msg("vault token watcher")
		return nil
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case next := <-s.relogin:
			return next
		case r := <-w.RenewCh():
			s.log.Debug().Int("ttl_s", r.Secret.Auth.LeaseDuration).Msg("vault token renewed")
		case err := <-w.DoneCh():
			if err != nil {
				s.log.Warn().Err(compact(err)).Msg("vault token renewal failed; logging in again")
			} else {
				s.log.Info().Msg("vault token reached its max TTL; logging in again")
			}
			s.mu.Lock()
			s.current = nil
			s.mu.Unlock()
			return nil
		}
	}
}
