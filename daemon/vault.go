package daemon

import (
	"context"
	"sync/atomic"

	"github.com/tokend/tokend/vaultsrc"
)

// The Vault source the keepers read through, and its replacement at a
// reload.

// credsRef lets a reload swap the Vault source under running keepers.
type credsRef struct {
	p atomic.Pointer[vaultsrc.Source]
}

func (c *credsRef) Read(ctx context.Context, s vaultsrc.Secret) (vaultsrc.Credentials, error) {
	return c.p.Load().Read(ctx, s)
}

func (c *credsRef) TransitKeyType(ctx context.Context, mount, key string) (string, error) {
	return c.p.Load().TransitKeyType(ctx, mount, key)
}

func (c *credsRef) ReadEntry(ctx context.Context, mount, path string) (map[string]string, int, error) {
	return c.p.Load().ReadEntry(ctx, mount, path)
}

func (c *credsRef) WriteEntry(ctx context.Context, mount, path string, fields map[string]string, cas int) (int, error) {
	return c.p.Load().WriteEntry(ctx, mount, path, fields, cas)
}

func (c *credsRef) TransitSign(ctx context.Context, mount, key, alg string, input []byte) ([]byte, error) {
	return c.p.Load().TransitSign(ctx, mount, key, alg, input)
}

func (d *daemon) startVault(vc vaultsrc.Config) error {
	src, err := vaultsrc.New(vc, d.log.With().Str("component", "vault").Logger(), vaultObserver{d.metrics})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(d.ctx)
	d.wg.Add(1)
	go func() { defer d.wg.Done(); src.Run(ctx) }()
	d.creds.p.Store(src)
	if d.vaultCancel != nil {
		d.vaultCancel()
	}
	d.vaultCancel = cancel
	d.log.Info().Str("address", src.Address()).Str("auth", vc.Auth).Msg("vault source configured")
	return nil
}
