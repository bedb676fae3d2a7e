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
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/rs/zerolog"
)

// The defaults of Config's fields; tokend's configuration uses them too.
const (
	DefaultAuth         = "token"
	DefaultAppRoleMount = "approle"
)

// Config says where Vault is and how to log in.
type Config struct {
	Address      string // "" = VAULT_ADDR or the library default
	Namespace    string // "" = VAULT_NAMESPACE, if set
	Auth         string // "token", "approle", "cert" or "jwt"
	TokenFile    string // auth=token; "" = VAULT_TOKEN
	RoleIDFile   string // auth=approle
	SecretIDFile string // auth=approle
	AppRoleMount string // auth=approle; default "approle"

	CAFile        string // PEM roots for Vault's certificate; "" = VAULT_CACERT or the system's
	TLSServerName string // the name to check Vault's certificate against

	CertFile, KeyFile string // auth=cert: the host's client certificate, read at each login
	CertRole          string // auth=cert: the role to log in as ("" = any matching)
	CertMount         string // auth=cert; default "cert"

	JWTFile  string // auth=jwt: a workload-identity JWT, read at each login
	Role     string // auth=jwt
	JWTMount string // auth=jwt; default "jwt"
}

// Secret says where a client's credentials live.
type Secret struct {
	Mount       string // KV mount, e.g. "secret"
	Path        string // path under the mount
	Version     int    // KV version: 1 or 2
	IDField     string
	SecretField string // the client secret, or the private key's PEM (private_key_jwt)
	KeyIDField  string // optional: the key id for a JWT's kid (private_key_jwt)
	CertField   string // tls_client_auth: the client certificate's PEM (SecretField: its key)
}

func (s Secret) String() string { return fmt.Sprintf("%s/%s (kv v%d)", s.Mount, s.Path, s.Version) }

// Credentials are an OAuth2 client's id and secret. Their String form
// hides the secret, so a stray log line cannot leak it.
type Credentials struct {
	ID     string
	Secret string // the client secret, or a private key's PEM
	KeyID  string // private_key_jwt: the kid, when the secret names one
	Cert   string // tls_client_auth: the client certificate's PEM (Secret: its key)
	// Assertion is a signed client assertion (private_key_jwt), made for
	// one request; not read from Vault.
	Assertion string
}

func (c Credentials) String() string {
	return fmt.Sprintf("client_id=%q client_secret=[redacted]", c.ID)
}
func (c Credentials) GoString() string { return c.String() }

// Observer is told the outcome of each Read and each login (for the
// metrics); nil tells nobody.
type Observer interface {
	Read(err error)
	Login(err error)
}

// Source reads secrets from one Vault. It is safe for concurrent use.
type Source struct {
	cfg    Config
	client *api.Client
	vc     *api.Config // what client was made from (cert logins make their own)
	log    zerolog.Logger

	obs Observer

	mu      sync.Mutex       // serialises logins
	current *api.Secret      // the login in use; nil when a new one is needed
	relogin chan *api.Secret // tells Run about a login done by Read
	ready   sync.Once        // logs "vault source ready" once Vault has answered
}

// New builds a Source. It does not contact Vault: a Vault that is down at
// start is retried by Run and by every Read.
func New(cfg Config, log zerolog.Logger, obs Observer) (*Source, error) {
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
	if cfg.CAFile != "" || cfg.TLSServerName != "" {
		if err := vc.ConfigureTLS(&api.TLSConfig{CACert: cfg.CAFile, TLSServerName: cfg.TLSServerName}); err != nil {
			return nil, fmt.Errorf("vault ca_file %q: %w", cfg.CAFile, err)
		}
	}
	if cfg.CertFile != "" && cfg.KeyFile != "" {
		presentCertificate(vc, cfg.CertFile, cfg.KeyFile)
	}
	u, err := url.Parse(vc.Address)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("vault address %q is not a URL", vc.Address)
	}
	g := &guard{base: vc.HttpClient.Transport, host: u.Host}
	if t, ok := g.base.(*http.Transport); ok {
		g.watchCertRequests(t)
	}
	vc.HttpClient.Transport = g
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client for %q: %w", vc.Address, err)
	}
	client.ClearToken() // never pick VAULT_TOKEN up behind the config's back
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	}
	cfg.Auth = cmp.Or(cfg.Auth, DefaultAuth)
	cfg.AppRoleMount = cmp.Or(cfg.AppRoleMount, DefaultAppRoleMount)
	cfg.CertMount = cmp.Or(cfg.CertMount, "cert")
	cfg.JWTMount = cmp.Or(cfg.JWTMount, "jwt")
	return &Source{cfg: cfg, client: client, vc: vc, log: log, obs: obs, relogin: make(chan *api.Secret, 1)}, nil
}

// Address is the Vault address in use.
func (s *Source) Address() string { return s.client.Address() }

// Read returns the credentials stored at sec. It logs in first if needed,
// and once more if Vault answers 403 (the token was revoked or expired).
func (s *Source) Read(ctx context.Context, sec Secret) (c Credentials, err error) {
	if s.obs != nil {
		defer func() { s.obs.Read(err) }()
	}
	return s.readCredentials(ctx, sec)
}

func (s *Source) readCredentials(ctx context.Context, sec Secret) (Credentials, error) {
	data, err := s.call(ctx, sec.String(), func() (map[string]any, error) { return s.read(ctx, sec) })
	if err != nil {
		return Credentials{}, err
	}
	id, err := field(data, sec, sec.IDField)
	if err != nil {
		return Credentials{}, err
	}
	c := Credentials{ID: id}
	// The fields a client_auth mode adds; no secret with a key in Transit.
	for _, f := range []struct {
		name string
		into *string
	}{{sec.SecretField, &c.Secret}, {sec.KeyIDField, &c.KeyID}, {sec.CertField, &c.Cert}} {
		if f.name == "" {
			continue
		}
		if *f.into, err = field(data, sec, f.name); err != nil {
			return Credentials{}, err
		}
	}
	return c, nil
}

// call logs in if needed, runs op (on what, for the log), and logs in
// again and retries once if Vault answers 403 (the token was revoked or
// expired). Every Vault request but the login goes through it.
func (s *Source) call(ctx context.Context, what string, op func() (map[string]any, error)) (data map[string]any, err error) {
	defer func() { err = s.scrub(err) }()
	if _, err := s.login(ctx, false); err != nil {
		return nil, err
	}
	data, err = op()
	if isForbidden(err) {
		s.log.Info().Str("path", what).Msg("vault refused the request (403); logging in again")
		if _, lerr := s.login(ctx, true); lerr != nil {
			return nil, fmt.Errorf("%w; logging in again: %v", err, lerr)
		}
		data, err = op()
	}
	if err == nil && data == nil {
		err = errors.New("empty answer")
	}
	return data, err
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
	// A refused handshake says all there is, with the fix: the layers
	// around it (the library's, the URL's) only repeat the path.
	var cre *CertRequiredError
	if errors.As(err, &cre) {
		return cre
	}
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

// scrub hides the Vault token in err's text: a proxy or a server may
// echo the request's X-Vault-Token header in an error page, and the text
// goes to logs and STATUS. errors.Is and errors.As still see err.
func (s *Source) scrub(err error) error {
	if err == nil {
		return nil
	}
	tok := s.client.Token()
	if len(tok) < 8 || !strings.Contains(err.Error(), tok) {
		return err
	}
	return &scrubbedError{err: err, text: strings.ReplaceAll(err.Error(), tok, "[vault token]")}
}

// scrubbedError is err with the Vault token hidden from its text.
type scrubbedError struct {
	err  error
	text string
}

func (e *scrubbedError) Error() string { return e.text }
func (e *scrubbedError) Unwrap() error { return e.err }

func isForbidden(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusForbidden
}

// presentCertificate has every connection to Vault present the host's
// certificate (auth = "cert"), not only the login's: a Vault that
// requires client certificates on its listener
// (tls_require_and_verify_client_cert) refuses any connection without
// one. Read at each handshake, so that a renewed certificate is used.
func presentCertificate(vc *api.Config, certFile, keyFile string) {
	t, ok := vc.HttpClient.Transport.(*http.Transport)
	if !ok {
		return
	}
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	t.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("vault cert_file/key_file: %w", err)
		}
		return &c, nil
	}
}
