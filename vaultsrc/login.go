package vaultsrc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
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
	if s.OnLogin != nil {
		s.OnLogin(err)
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
		secretID, err := readFile(s.cfg.SecretIDFile, "secret_id_file")
		if err != nil {
			return nil, err
		}
		s.client.ClearToken()
		path := "auth/" + s.cfg.AppRoleMount + "/login"
		sec, err := s.client.Logical().WriteWithContext(ctx, path,
			map[string]any{"role_id": roleID, "secret_id": secretID})
		if err != nil {
			return nil, fmt.Errorf("vault approle login at %q: %w", path, compact(err))
		}
		if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
			return nil, fmt.Errorf("vault approle login at %q: no token in the answer", path)
		}
		s.client.SetToken(sec.Auth.ClientToken)
		s.log.Info().Str("mount", s.cfg.AppRoleMount).Dur("ttl", time.Duration(sec.Auth.LeaseDuration)*time.Second).
			Bool("renewable", sec.Auth.Renewable).Msg("logged in to vault with approle")
		return sec, nil
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
