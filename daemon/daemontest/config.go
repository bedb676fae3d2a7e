package daemontest

import (
	"bytes"
	"os"
	"testing"

	"github.com/BurntSushi/toml"
)

// Config is a tokend.toml as tests write it: the documented keys, spelled
// here independently of the daemon's parser, encoded with a TOML encoder.
// Zero values are left out, so tokend's defaults apply. Durations are
// strings, as in the file ("1s").
type Config struct {
	Socket               string                  `toml:"socket,omitempty"` // "" → the test's own socket
	SocketMode           string                  `toml:"socket_mode,omitempty"`
	SocketGroup          string                  `toml:"socket_group,omitempty"`
	LogLevel             string                  `toml:"log_level,omitempty"`
	DefaultToken         string                  `toml:"default_token,omitempty"`
	MaxConnections       int                     `toml:"max_connections,omitzero"`
	MaxConnectionsPerUID int                     `toml:"max_connections_per_uid,omitzero"`
	IdleTimeout          string                  `toml:"idle_timeout,omitempty"`
	MetricsListen        string                  `toml:"metrics_listen,omitempty"`
	MetricsListenPublic  bool                    `toml:"metrics_listen_public,omitempty"`
	FirstTokenWait       string                  `toml:"first_token_wait,omitempty"`
	Vault                VaultConfig             `toml:"vault,omitempty"` // left out when zero: a host without Vault
	Token                map[string]*TokenConfig `toml:"token"`
	Proxy                map[string]*ProxyConfig `toml:"proxy,omitempty"`
}

// ProxyConfig is a [proxy.NAME] table.
type ProxyConfig struct {
	Token             string `toml:"token,omitempty"`
	Listen            string `toml:"listen,omitempty"`
	Upstream          string `toml:"upstream,omitempty"`
	AllowInsecureHTTP bool   `toml:"allow_insecure_http,omitempty"`
	SocketMode        string `toml:"socket_mode,omitempty"`
	SocketGroup       string `toml:"socket_group,omitempty"`
}

type VaultConfig struct {
	Address           string `toml:"address,omitempty"`
	Namespace         string `toml:"namespace,omitempty"`
	Auth              string `toml:"auth,omitempty"`
	TokenFile         string `toml:"token_file,omitempty"`
	RoleIDFile        string `toml:"role_id_file,omitempty"`
	SecretIDFile      string `toml:"secret_id_file,omitempty"`
	AppRoleMount      string `toml:"approle_mount,omitempty"`
	AllowInsecureHTTP bool   `toml:"allow_insecure_http,omitempty"`
	CAFile            string `toml:"ca_file,omitempty"`
	TLSServerName     string `toml:"tls_server_name,omitempty"`
	CertFile          string `toml:"cert_file,omitempty"`
	KeyFile           string `toml:"key_file,omitempty"`
	CertRole          string `toml:"cert_role,omitempty"`
	CertMount         string `toml:"cert_mount,omitempty"`
	JWTFile           string `toml:"jwt_file,omitempty"`
	Role              string `toml:"role,omitempty"`
	JWTMount          string `toml:"jwt_mount,omitempty"`
}

type TokenConfig struct {
	TokenURL          string            `toml:"token_url,omitempty"`
	Issuer            string            `toml:"issuer,omitempty"`
	CAFile            string            `toml:"ca_file,omitempty"`
	CAOnly            bool              `toml:"ca_only,omitempty"`
	Scope             string            `toml:"scope,omitempty"`
	ClientAuth        string            `toml:"client_auth,omitempty"`
	KVMount           string            `toml:"kv_mount,omitempty"`
	KVVersion         int               `toml:"kv_version,omitzero"`
	KVPath            string            `toml:"kv_path,omitempty"`
	ClientIDField     string            `toml:"client_id_field,omitempty"`
	ClientSecretField string            `toml:"client_secret_field,omitempty"`
	PrivateKeyField   string            `toml:"private_key_field,omitempty"`
	KeyIDField        string            `toml:"key_id_field,omitempty"`
	AssertionAlg      string            `toml:"assertion_alg,omitempty"`
	AssertionAudience string            `toml:"assertion_audience,omitempty"`
	TransitMount      string            `toml:"transit_mount,omitempty"`
	TransitKey        string            `toml:"transit_key,omitempty"`
	AssertionKID      string            `toml:"assertion_kid,omitempty"`
	TLSCertField      string            `toml:"tls_cert_field,omitempty"`
	TLSKeyField       string            `toml:"tls_key_field,omitempty"`
	ClientID          string            `toml:"client_id,omitempty"`
	ClientIDFile      string            `toml:"client_id_file,omitempty"`
	ClientSecretFile  string            `toml:"client_secret_file,omitempty"`
	PrivateKeyFile    string            `toml:"private_key_file,omitempty"`
	TLSCertFile       string            `toml:"tls_cert_file,omitempty"`
	TLSKeyFile        string            `toml:"tls_key_file,omitempty"`
	DPoP              bool              `toml:"dpop,omitempty"`
	DPoPAlg           string            `toml:"dpop_alg,omitempty"`
	MinRemaining      string            `toml:"min_remaining,omitempty"`
	RetryMax          string            `toml:"retry_max,omitempty"`
	RequestTimeout    string            `toml:"request_timeout,omitempty"`
	MaxFetchesPerHour int               `toml:"max_fetches_per_hour,omitzero"`
	SharePath         string            `toml:"share_path,omitempty"`
	ShareMount        string            `toml:"share_mount,omitempty"`
	AllowUsers        []string          `toml:"allow_users,omitempty"`
	AllowGroups       []string          `toml:"allow_groups,omitempty"`
	AllowUIDs         []int             `toml:"allow_uids,omitempty"`
	AllowGIDs         []int             `toml:"allow_gids,omitempty"`
	AllowInsecureHTTP bool              `toml:"allow_insecure_http,omitempty"`
	File              string            `toml:"file,omitempty"`
	FileFormat        string            `toml:"file_format,omitempty"`
	FileMode          string            `toml:"file_mode,omitempty"`
	FileOwner         string            `toml:"file_owner,omitempty"`
	FileGroup         string            `toml:"file_group,omitempty"`
	Audience          string            `toml:"audience,omitempty"`
	Resource          []string          `toml:"resource,omitempty"`
	ExtraParams       map[string]string `toml:"extra_params,omitempty"`
}

// Scope is the documented recipe's scope.
const Scope = "https://rbm.vibes.com/rbm.agents"

// OneToken is a config with Vault token auth and one token, "vibes", read
// from kv_path tokend/vibes.
func OneToken(vaultAddr, tokenFile, tokenURL string) Config {
	return Config{
		Vault: VaultConfig{Address: vaultAddr, TokenFile: tokenFile},
		Token: map[string]*TokenConfig{"vibes": {TokenURL: tokenURL, Scope: Scope, KVPath: "tokend/vibes"}},
	}
}

// Vibes is the token table of a OneToken config.
func (c Config) Vibes() *TokenConfig { return c.Token["vibes"] }

// Clone copies c deeply enough to change its tokens without touching c's.
func (c Config) Clone() Config {
	c2 := c
	c2.Token = map[string]*TokenConfig{}
	for name, tc := range c.Token {
		t := *tc
		c2.Token[name] = &t
	}
	return c2
}

// TOML encodes c.
func (c Config) TOML() string {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		panic("daemontest: encoding a Config: " + err.Error())
	}
	return b.String()
}

// WriteFile writes c to path, for tests that run tokend themselves.
func (c Config) WriteFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(c.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
}
