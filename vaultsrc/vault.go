// Package vaultsrc reads OAuth2 client credentials from HashiCorp Vault.
//
// A Source logs in (a token from a file or VAULT_TOKEN, or AppRole), keeps
// its Vault token alive with the library's LifetimeWatcher, logs in again
// when the token cannot be renewed or a read is refused with 403, and reads
// one KV v1 or v2 secret into Credentials.
//
// Reads are meant for a refresh path that must not stall: the client does
// no retries of its own, and callers pass a short deadline. It is the only
// package of tokend that imports github.com/hashicorp/vault/api.
package vaultsrc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/rs/zerolog"
)

// Config says where Vault is and how to log in.
type Config struct {
	Address      string // "" = VAULT_ADDR or the library default
	Namespace    string // "" = VAULT_NAMESPACE, if set
	Auth         string // "token" or "approle"
	TokenFile    string // auth=token; "" = VAULT_TOKEN
	RoleIDFile   string // auth=approle
	SecretIDFile string // auth=approle
	AppRoleMount string // auth=approle; default "approle"
}

// Secret says where a client's credentials live.
type Secret struct {
	Mount       string // KV mount, e.g. "secret"
	Path        string // path under the mount
	Version     int    // KV version: 1 or 2
	IDField     string
	SecretField string
}

func (s Secret) String() string { return fmt.Sprintf("%s/%s (kv v%d)", s.Mount, s.Path, s.Version) }

// Credentials are an OAuth2 client's id and secret. Their String form
// hides the secret, so a stray log line cannot leak it.
type Credentials struct {
	ID     string
	Secret string
}

func (c Credentials) String() string {
	return fmt.Sprintf("client_id=%q client_secret=[redacted]", c.ID)
}
func (c Credentials) GoString() string { return c.String() }

// Source reads secrets from one Vault. It is safe for concurrent use.
type Source struct {
	cfg    Config
	client *api.Client
	log    zerolog.Logger

	mu      sync.Mutex       // serialises logins
	current *api.Secret      // the login in use; nil when a new one is needed
	relogin chan *api.Secret // tells Run about a login done by Read
}

// New builds a Source. It does not contact Vault: a Vault that is down at
// start is retried by Run and by every Read.
func New(cfg Config, log zerolog.Logger) (*Source, error) {
	vc := api.DefaultConfig() // reads VAULT_ADDR, VAULT_CACERT, VAULT_SKIP_VERIFY, … from the environment
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client settings from the environment: %w", vc.Error)
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	// Reads sit on the token refresh path: fail fast and let the caller
	// fall back to the credentials it has, rather than retry slowly here.
	vc.MaxRetries = 0
	vc.Timeout = 10 * time.Second
	u, err := url.Parse(vc.Address)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("vault address %q is not a URL", vc.Address)
	}
	vc.HttpClient.Transport = &guard{base: vc.HttpClient.Transport, host: u.Host}
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client for %q: %w", vc.Address, err)
	}
	client.ClearToken() // never pick VAULT_TOKEN up behind the config's back
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	if cfg.Auth == "" {
		cfg.Auth = "token"
	}
	if cfg.AppRoleMount == "" {
		cfg.AppRoleMount = "approle"
	}
	return &Source{cfg: cfg, client: client, log: log, relogin: make(chan *api.Secret, 1)}, nil
}

// Address is the Vault address in use.
func (s *Source) Address() string { return s.client.Address() }

// Read returns the credentials stored at sec. It logs in first if needed,
// and once more if Vault answers 403 (the token was revoked or expired).
func (s *Source) Read(ctx context.Context, sec Secret) (Credentials, error) {
	if err := s.ensureLogin(ctx); err != nil {
		return Credentials{}, err
	}
	data, err := s.read(ctx, sec)
	if isForbidden(err) {
		s.log.Info().Str("secret", sec.String()).Msg("vault refused the read (403); logging in again")
		if lerr := s.login(ctx); lerr != nil {
			return Credentials{}, fmt.Errorf("reading %s: %w; logging in again: %v", sec, err, lerr)
		}
		data, err = s.read(ctx, sec)
	}
	if err != nil {
		return Credentials{}, err
	}
	id, err := field(data, sec, sec.IDField)
	if err != nil {
		return Credentials{}, err
	}
	secret, err := field(data, sec, sec.SecretField)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{ID: id, Secret: secret}, nil
}

func (s *Source) read(ctx context.Context, sec Secret) (map[string]any, error) {
	if sec.Version == 1 {
		kv, err := s.client.KVv1(sec.Mount).Get(ctx, sec.Path)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", sec, compact(err))
		}
		return kv.Data, nil
	}
	kv, err := s.client.KVv2(sec.Mount).Get(ctx, sec.Path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", sec, compact(err))
	}
	if kv.Data == nil {
		v := 0
		if kv.VersionMetadata != nil {
			v = kv.VersionMetadata.Version
		}
		// Deleted or destroyed: an error, never empty credentials.
		return nil, fmt.Errorf("reading %s: the current version (%d) is deleted; write a new version", sec, v)
	}
	return kv.Data, nil
}

// field returns one string field, naming the path and field (never the
// value) when it is missing or not a string.
func field(data map[string]any, sec Secret, name string) (string, error) {
	v, ok := data[name]
	if !ok {
		return "", fmt.Errorf("secret %s has no field %q", sec, name)
	}
	str, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("secret %s: field %q is a %T, want a string", sec, name, v)
	}
	if str == "" {
		return "", fmt.Errorf("secret %s: field %q is empty", sec, name)
	}
	return str, nil
}

// compact turns the library's multi-line answer errors into one line:
// "vault answered 403 to GET /v1/secret/data/x: permission denied". The
// text stays Vault's (it may hold anything, even a proxy's HTML page):
// whoever repeats it cleans it first (socket.Clean in the daemon).
func compact(err error) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	path := re.URL
	if u, perr := url.Parse(re.URL); perr == nil {
		path = u.Path
	}
	what := strings.Join(re.Errors, "; ")
	if re.RawError {
		what = "not a Vault answer: " + what
	}
	return &answerError{re: re, text: fmt.Sprintf("vault answered %d to %s %s: %s", re.StatusCode, re.HTTPMethod, path, what)}
}

// answerError is a compacted *api.ResponseError; errors.As still finds it.
type answerError struct {
	re   *api.ResponseError
	text string
}

func (e *answerError) Error() string { return e.text }
func (e *answerError) Unwrap() error { return e.re }

func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}

// ensureLogin logs in unless a login is in place already.
func (s *Source) ensureLogin(ctx context.Context) error {
	_, fresh, err := s.authenticate(ctx, false)
	if fresh {
		s.tellRun()
	}
	return err
}

// login logs in again, whatever the current state.
func (s *Source) login(ctx context.Context) error {
	_, _, err := s.authenticate(ctx, true)
	if err == nil {
		s.tellRun()
	}
	return err
}

// tellRun hands a login done on the read path to Run, which watches it.
func (s *Source) tellRun() {
	s.mu.Lock()
	sec := s.current
	s.mu.Unlock()
	select {
	case s.relogin <- sec:
	default:
	}
}

// authenticate logs in and installs the new Vault token; without force it
// returns the current login when there is one (concurrent first reads and
// Run would otherwise each log in). fresh says whether it logged in.
func (s *Source) authenticate(ctx context.Context, force bool) (sec *api.Secret, fresh bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !force && s.current != nil {
		return s.current, false, nil
	}
	sec, err = s.logIn(ctx)
	if err != nil {
		return nil, false, err
	}
	s.current = sec
	return sec, true, nil
}

// logIn does the login itself; s.mu is held.
func (s *Source) logIn(ctx context.Context) (*api.Secret, error) {
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

// Run keeps the Vault token alive until ctx ends: it renews it with the
// library's LifetimeWatcher and logs in again when it can no longer be
// renewed. Failures are logged and retried with backoff; Run returns only
// when ctx ends.
func (s *Source) Run(ctx context.Context) error {
	delay := time.Second
	var sec *api.Secret
	force := false // the first time, a login done by a read counts
	for ctx.Err() == nil {
		if sec == nil {
			var err error
			if sec, _, err = s.authenticate(ctx, force); err != nil {
				s.log.Warn().Err(err).Dur("retry_in", delay).Msg("vault login failed")
				if !sleep(ctx, delay) {
					break
				}
				delay = min(2*delay, 30*time.Second)
				continue
			}
			delay = time.Second
		}
		sec = s.watch(ctx, sec)
		force = true
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
			select {
			case <-ctx.Done():
			case next := <-s.relogin:
				return next
			case <-time.After(30 * time.Second):
			}
			return nil
		}
		ttl, _ := self.TokenTTL()
		renewable, _ := self.TokenIsRenewable()
		sec = &api.Secret{Auth: &api.SecretAuth{ClientToken: sec.Auth.ClientToken, Renewable: renewable, LeaseDuration: int(ttl / time.Second)}}
	}
	ttl := time.Duration(sec.Auth.LeaseDuration) * time.Second
	if !sec.Auth.Renewable {
		if ttl == 0 {
			// A token that never expires (e.g. a root token): nothing to do
			// until a read finds it revoked and logs in again.
			select {
			case <-ctx.Done():
				return nil
			case next := <-s.relogin:
				return next
			}
		}
		select {
		case <-ctx.Done():
		case next := <-s.relogin:
			return next
		case <-time.After(ttl * 2 / 3):
		}
		return nil
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

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
