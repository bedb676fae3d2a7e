package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/proxy"
	"github.com/tokend/tokend/socket/server"
)

// The [proxy.NAME] listeners: started with the daemon, stopped with it.
// A change to them takes a restart (the log says so at a reload); the
// allow lists of their tokens apply at once, as on the socket.

// startProxies listens on every proxy's address and serves it; the
// returned function stops them all. An address that cannot be listened
// on is a configuration error (exit 2), as for metrics_listen.
func (d *daemon) startProxies(cfg *config.Config) (stop func(), err error) {
	var running []*proxy.Proxy
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		for _, p := range running {
			p.Shutdown(ctx)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Proxies)) {
		pc := cfg.Proxies[name]
		ln, err := listenProxy(pc)
		if err != nil {
			stop()
			problem := fmt.Sprintf("proxy.%s.listen: %v", name, err)
			if errors.Is(err, os.ErrPermission) && pc.SocketGID != -1 {
				problem += fmt.Sprintf(" (tokend can give a file only a group it is in: add SupplementaryGroups=%s to tokend.service in a drop-in, or drop proxy.%s.socket_group, set socket_mode = \"0666\" and let the token's allow lists decide)", pc.SocketGroupName, name)
			}
			return nil, &config.ConfigError{File: d.path, Problems: []string{problem}}
		}
		tc := cfg.Tokens[pc.Token]
		var roots *x509.CertPool
		if tc.CAFile != "" {
			if roots, err = config.CAPool(tc.CAFile, tc.CAOnly); err != nil {
				d.log.Error().Err(err).Str("proxy", name).Msg("ca_file unusable for the upstream; using the system roots")
			}
		}
		deps := proxy.Deps{Tokens: d, Roots: roots, Observer: d.metrics, MaxPerUID: cfg.MaxPerUID, IdleTimeout: cfg.IdleTimeout,
			Log: d.log.With().Str("proxy", name).Logger()}
		if tc.ClientAuth == "tls_client_auth" {
			deps.ClientCert = d.clientCertificate(pc.Token)
		}
		if tc.DPoP {
			deps.Proof, deps.Nonce = d.dpopOf(pc.Token)
		}
		p := proxy.New(*pc, deps)
		running = append(running, p)
		go func() {
			if err := p.Serve(ln); err != nil {
				d.log.Error().Err(err).Str("proxy", name).Msg("proxy stopped")
			}
		}()
		d.log.Info().Str("proxy", name).Str("listen", pc.Listen).Str("upstream", pc.Upstream).Str("token", pc.Token).Msg("proxy listening")
	}
	return stop, nil
}

// listenProxy makes a proxy's listener: a Unix socket with its mode and
// group, or loopback TCP.
func listenProxy(pc *config.Proxy) (net.Listener, error) {
	if path, ok := strings.CutPrefix(pc.Listen, "unix:"); ok {
		return server.Listen(path, pc.SocketMode, pc.SocketGID)
	}
	return net.Listen("tcp", pc.Listen)
}

// clientCertificate is the current keeper's client certificate for the
// token called name: keepers are replaced at reloads.
func (d *daemon) clientCertificate(name string) func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return func(info *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if e := d.reg.Load().entries[name]; e != nil {
			return e.k.ClientCertificate(info)
		}
		return nil, errors.New("no token " + name)
	}
}

// dpopOf makes the current keeper's DPoP proofs and keeps the nonces
// resource servers give, for the token called name.
func (d *daemon) dpopOf(name string) (proof func(token, method, url string) (string, error), nonce func(url, nonce string)) {
	proof = func(token, method, url string) (string, error) {
		if e := d.reg.Load().entries[name]; e != nil {
			return e.k.ProofFor(token, method, url)
		}
		return "", errors.New("no token " + name)
	}
	nonce = func(url, n string) {
		if e := d.reg.Load().entries[name]; e != nil {
			e.k.DPoPNonce(url, n)
		}
	}
	return proof, nonce
}

// proxiesChanged reports whether a reload changed the proxies, which
// takes a restart.
func proxiesChanged(old, cfg *config.Config) bool {
	return !maps.EqualFunc(old.Proxies, cfg.Proxies, func(a, b *config.Proxy) bool { return *a == *b })
}
