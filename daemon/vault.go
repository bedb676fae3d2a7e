package daemon

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/vaultsrc"
)

// The Vault source the keepers read through, and its replacement at a
// reload.

// credsRef lets a reload swap the Vault source under running keepers.
type credsRef struct {
	p atomic.Pointer[vaultsrc.Source]
}

// errNoVault is what a Vault call gets when no Vault source runs: no
// token needed one at the last (re)load.
var errNoVault = errors.New("no Vault source: the configuration has no token that uses Vault")

func (c *credsRef) src() (*vaultsrc.Source, error) {
	if s := c.p.Load(); s != nil {
		return s, nil
	}
	return nil, errNoVault
}

func (c *credsRef) Read(ctx context.Context, s vaultsrc.Secret) (vaultsrc.Credentials, error) {
	src, err := c.src()
	if err != nil {
		return vaultsrc.Credentials{}, err
	}
	return src.Read(ctx, s)
}

func (c *credsRef) TransitKeyType(ctx context.Context, mount, key string) (string, error) {
	src, err := c.src()
	if err != nil {
		return "", err
	}
	return src.TransitKeyType(ctx, mount, key)
}

func (c *credsRef) ReadEntry(ctx context.Context, mount, path string) (map[string]string, int, error) {
	src, err := c.src()
	if err != nil {
		return nil, 0, err
	}
	return src.ReadEntry(ctx, mount, path)
}

func (c *credsRef) WriteEntry(ctx context.Context, mount, path string, fields map[string]string, cas int) (int, error) {
	src, err := c.src()
	if err != nil {
		return 0, err
	}
	return src.WriteEntry(ctx, mount, path, fields, cas)
}

func (c *credsRef) TransitSign(ctx context.Context, mount, key, alg string, input []byte) ([]byte, error) {
	src, err := c.src()
	if err != nil {
		return nil, err
	}
	return src.TransitSign(ctx, mount, key, alg, input)
}

// useVault starts the Vault source cfg needs when it differs from the
// running one (old: the configuration before a reload, or nil), or stops
// it when no token uses Vault any more: then no Vault series are
// exported either.
func (d *daemon) useVault(cfg, old *config.Config) error {
	switch {
	case !cfg.UsesVault():
		if d.vaultCancel != nil {
			d.vaultCancel()
			d.vaultCancel = nil
			d.creds.p.Store(nil)
			d.log.Info().Msg("vault source stopped: no token uses Vault")
		}
		d.metrics.vaultUsed(false)
		return nil
	case old != nil && old.UsesVault() && cfg.Vault == old.Vault:
		return nil
	}
	if err := d.startVault(cfg.Vault); err != nil {
		return err
	}
	d.metrics.vaultUsed(true)
	return nil
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
