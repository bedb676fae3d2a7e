package vaultsrc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
)

// login returns the login in use, or logs in when there is none or force
// says the current one is refused. It is the one way in: concurrent reads
// and Run share a login instead of each making their own. A login made on
// the read path is handed to Run, which keeps it renewed.
func (s *Source) login(ctx context.Context, force bool) (*api.Secret, error) {
	sec, fresh, err := s.loginOnce(ctx, force)
	if fresh {
		select {
		case s.relogin <- sec:
		default: // Run has one pending already; it will see s.current
		}
	}
	return sec, err
}

// loginOnce is login without telling Run; Run itself calls it.
func (s *Source) loginOnce(ctx context.Context, force bool) (sec *api.Secret, fresh bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !force && s.current != nil {
		return s.current, false, nil
	}
	sec, err = s.authenticate(ctx)
	if s.obs != nil {
		s.obs.Login(err)
	}
	if err != nil {
		return nil, false, err
	}
	s.current = sec
	return sec, true, nil
}

// authenticate proves tokend to Vault with the configured method and
// installs the Vault token it gets; s.mu is held.
func (s *Source) authenticate(ctx context.Context) (*api.Secret, error) {
	switch s.cfg.Auth {
	case "approle":
		roleID, err := readFile(s.cfg.RoleIDFile, "role_id_file")
		if err != nil {
			return nil, err
		}
		// The official method; it reads the secret_id file at each login.
		method, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromFile: s.cfg.SecretIDFile},
			approle.WithMountPath(s.cfg.AppRoleMount))
		if err != nil {
			return nil, fmt.Errorf("vault approle: %w", err)
		}
		s.client.ClearToken()
		sec, err := s.client.Auth().Login(ctx, method)
		return s.loggedIn(sec, err, "approle", s.cfg.AppRoleMount)
	case "cert":
		sec, err := s.certLogin(ctx)
		return s.loggedIn(sec, err, "cert", s.cfg.CertMount)
	case "jwt":
		jwt, err := readFile(s.cfg.JWTFile, "jwt_file")
		if err != nil {
			return nil, err
		}
		s.client.ClearToken()
		sec, err := s.client.Logical().WriteWithContext(ctx, "auth/"+s.cfg.JWTMount+"/login",
			map[string]any{"role": s.cfg.Role, "jwt": jwt})
		return s.loggedIn(sec, err, "jwt", s.cfg.JWTMount)
	default:
		tok := os.Getenv("VAULT_TOKEN")
		if s.cfg.TokenFile != "" {
			var err error
			if tok, err = readFile(s.cfg.TokenFile, "token_file"); err != nil {
				return nil, err
			}
		}
		if tok == "" {
			return nil, errors.New("vault auth = \"token\": no token_file configured and VAULT_TOKEN is empty")
		}
		s.client.SetToken(tok)
		// TTL and renewability are learnt by Run (lookup-self), off the read path.
		return &api.Secret{Auth: &api.SecretAuth{ClientToken: tok}}, nil
	}
}

// loggedIn installs the token a login returned, or says why there is none.
func (s *Source) loggedIn(sec *api.Secret, err error, method, mount string) (*api.Secret, error) {
	if err != nil {
		return nil, fmt.Errorf("vault %s login at auth/%s: %w", method, mount, compact(err))
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, fmt.Errorf("vault %s login at auth/%s: no token in the answer", method, mount)
	}
	s.client.SetToken(sec.Auth.ClientToken)
	s.log.Info().Str("method", method).Str("mount", mount).Dur("ttl", time.Duration(sec.Auth.LeaseDuration)*time.Second).
		Bool("renewable", sec.Auth.Renewable).Msg("logged in to vault")
	return sec, nil
}

// certLogin logs in with the host's TLS client certificate, read from its
// files now (a renewed certificate is picked up at the next login), on a
// client of its own: the certificate is needed for the login only.
func (s *Source) certLogin(ctx context.Context) (*api.Secret, error) {
	cert, err := tls.LoadX509KeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("vault cert_file/key_file: %w", err)
	}
	base, ok := s.vc.HttpClient.Transport.(*guard)
	if !ok {
		return nil, errors.New("vault cert login: unexpected transport")
	}
	inner, ok := base.base.(*http.Transport)
	if !ok {
		return nil, errors.New("vault cert login: unexpected transport")
	}
	t := inner.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	t.TLSClientConfig.Certificates = []tls.Certificate{cert}
	t.TLSClientConfig.GetClientCertificate = nil
	vc := &api.Config{Address: s.client.Address(), MaxRetries: 0, Timeout: s.vc.Timeout,
		HttpClient: &http.Client{Transport: &guard{base: t, host: base.host}, Timeout: s.vc.Timeout}}
	lc, err := api.NewClient(vc)
	if err != nil {
		return nil, err
	}
	lc.ClearToken()
	lc.SetNamespace(s.client.Namespace())
	defer t.CloseIdleConnections()
	body := map[string]any{}
	if s.cfg.CertRole != "" {
		body["name"] = s.cfg.CertRole
	}
	return lc.Logical().WriteWithContext(ctx, "auth/"+s.cfg.CertMount+"/login", body)
}

func readFile(path, key string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("vault %s: %w", key, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("vault %s %q is empty", key, path)
	}
	return v, nil
}
