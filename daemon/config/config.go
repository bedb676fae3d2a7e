// Package config turns tokend.toml into a validated Config. It has one
// entry point for every caller: Check reads the file, parses it (TOML
// syntax, then the schema, table by table, every problem naming its key
// and line), and checks what the file alone cannot show: the files it
// names, read as the service user would; the id maps the allow lists
// need; the permissions sshd's StrictModes would catch. `tokend serve`
// calls it at start and at every reload, `tokend check` before a start.
//
// It knows nothing of the socket server, of OAuth2 or of the process: a
// Config is plain data for the packages that run it.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/filesrc"
	"github.com/tokend/tokend/vaultsrc"
)

// DefaultPath is read when no --config is given.
const DefaultPath = "/etc/tokend/tokend.toml"

// Config is a validated configuration, ready to run.
type Config struct {
	Listen
	LogLevel       zerolog.Level
	DefaultToken   string
	MaxConnections int
	MaxPerUID      int // max_connections_per_uid; root and tokend's own uid are exempt
	// MetricsListen is where /metrics and /healthz are served: "" (off),
	// "host:port" or "unix:/path". A change takes a restart.
	MetricsListen string
	// FirstTokenWait is how long connect-and-read clients (LoadCredential=)
	// wait for a first token.
	FirstTokenWait time.Duration
	Vault          vaultsrc.Config
	Tokens         map[string]*TokenConfig
	// Proxies are the [proxy.NAME] tables. A change takes a restart.
	Proxies map[string]*Proxy
}

// Listen is what the socket is made with; a change takes a restart.
type Listen struct {
	Socket      string
	SocketMode  os.FileMode
	SocketGID   int // -1: leave the group alone
	IdleTimeout time.Duration
}

// TokenConfig is one [token.NAME] table: how the token is obtained, and
// who may read it.
type TokenConfig struct {
	Fetch
	Access Access
	File   *FileSink // nil: none
}

// FileSink is a file that holds the token for tools that can only read
// one: rewritten atomically with every new token, removed while the token
// is unavailable and when tokend stops.
type FileSink struct {
	Path     string
	Format   string // "token", "header" or "json"
	Mode     os.FileMode
	UID, GID int // -1: leave as created
}

// Fetch is how a token is obtained: everything its keeper needs. A reload
// that leaves it equal (==) keeps the keeper and its current token; a
// change to the allow lists alone applies at once.
type Fetch struct {
	Name     string
	TokenURL string // "" when Issuer is set
	// Issuer is where the token endpoint is discovered instead.
	Issuer       string
	InsecureHTTP bool   // allow_insecure_http: also for a discovered endpoint
	CAFile       string // ca_file: PEM roots for the token endpoint
	CAOnly       bool   // ca_only: those roots alone, not the system's too
	Scope        string
	// Params are audience, resource and extra_params, form-encoded in
	// that order ("&audience=…&resource=…"), appended to every request.
	// A string, so that Fetch stays comparable with ==.
	Params     string
	ClientAuth string // "basic+body", "basic", "body" or "private_key_jwt"
	// private_key_jwt: the assertion's alg for RSA keys ("" → RS256, or
	// "PS256") and aud ("" → the token endpoint).
	AssertionAlg      string
	AssertionAudience string
	// private_key_jwt with the key in Vault Transit: it signs there.
	TransitMount string
	TransitKey   string
	AssertionKID string          // the JWT's kid with Transit
	Secret       vaultsrc.Secret // the client credentials in Vault, unless Files are set
	// Files: the client credentials from files (client_id,
	// client_secret_file, …) instead of Vault.
	Files          filesrc.Files
	MinRemaining   time.Duration
	RetryMax       time.Duration
	RequestTimeout time.Duration
	MaxPerHour     int // max_fetches_per_hour
	// DPoP (dpop = true): tokens bound to a key tokend makes at start
	// (RFC 9449), of DPoPAlg ("ES256", "EdDSA" or "RS256").
	DPoP    bool
	DPoPAlg string
	// share_path and share_mount: the KV v2 entry the hosts sharing this
	// token keep it in; "" for a token of this host alone.
	SharePath, ShareMount string
}

// Source says where the client credentials come from: "vault" or "file"
// (the metrics' and STATUS's source).
func (f *Fetch) Source() string {
	if f.Files.Set() {
		return "file"
	}
	return "vault"
}

// The documented defaults.
const (
	defaultScope          = ""
	defaultClientAuth     = "basic+body"
	DefaultMinRemaining   = 60 * time.Second
	DefaultRetryMax       = 30 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	defaultIdleTimeout    = 30 * time.Second
	defaultMaxConns       = 1024
	defaultMaxPerUID      = 64
	defaultFirstWait      = 30 * time.Second
	defaultMaxPerHour     = 120
)

// ConfigError lists every problem found in a configuration file.
type ConfigError struct {
	File     string
	Problems []string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("config %q: %s", e.File, strings.Join(e.Problems, "; "))
}

// ParseConfig is the schema check of Check on bytes already read; path is
// for messages.
// Environment variables, users and groups are this machine's.
func ParseConfig(path string, data []byte) (*Config, error) {
	return parseConfig(path, data, thisHost())
}

// parseConfig parses with the environment and the user and group lookups
// of h, so that tests need not depend on the machine.
func parseConfig(path string, data []byte, h host) (*Config, error) {
	c, _, err := parse(path, data, h, credentialsDir{})
	return c, err
}

// parse is the file's syntax and schema: every check that needs no more
// than the text, the environment, and user and group names. It returns
// the reader too, for the files the configuration names and its warnings.
func parse(path string, data []byte, h host, creds credentialsDir) (*Config, *reader, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, nil, &ConfigError{File: path, Problems: []string{syntaxProblem(pe, data, keyLines(data))}}
		}
		return nil, nil, &ConfigError{File: path, Problems: []string{err.Error()}}
	}
	r := &reader{host: h, lines: keyLines(data), creds: creds}
	c := r.config(raw)
	if len(r.problems) > 0 {
		return nil, nil, &ConfigError{File: path, Problems: r.problems}
	}
	return c, r, nil
}
