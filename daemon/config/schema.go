package config

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/vaultsrc"
)

// The schema: tokend.toml's tables and keys, their defaults and checks.

// topLevelKeys are the keys of the file's top level, before any table.
var topLevelKeys = []string{"socket", "socket_mode", "socket_group", "log_level", "default_token",
	"max_connections", "max_connections_per_uid", "idle_timeout", "metrics_listen", "metrics_listen_public", "first_token_wait"}

// vaultKeys are the keys of [vault].
var vaultKeys = []string{"address", "namespace", "auth", "token_file", "role_id_file", "secret_id_file", "approle_mount", "allow_insecure_http",
	"ca_file", "tls_server_name", "cert_file", "key_file", "cert_role", "cert_mount", "jwt_file", "role", "jwt_mount"}

// tokenKeys are the keys of a [token.NAME] table.
var tokenKeys = []string{"token_url", "scope", "client_auth", "kv_mount", "kv_path", "kv_version",
	"client_id_field", "client_secret_field", "min_remaining", "retry_max", "request_timeout",
	"allow_users", "allow_groups", "allow_uids", "allow_gids", "allow_insecure_http",
	"file", "file_format", "file_mode", "file_owner", "file_group", "audience", "resource", "extra_params", "issuer", "ca_file", "ca_only",
	"private_key_field", "key_id_field", "assertion_alg", "assertion_audience", "transit_mount", "transit_key", "assertion_kid",
	"tls_cert_field", "tls_key_field", "max_fetches_per_hour", "share_path", "share_mount",
	"client_id", "client_id_file", "client_secret_file", "private_key_file", "tls_cert_file", "tls_key_file", "dpop", "dpop_alg"}

func (r *reader) config(raw map[string]any) *Config {
	top := r.table("", raw, append(slices.Clone(topLevelKeys), "vault", "token", "proxy")...)
	c := &Config{
		Listen: Listen{
			Socket:      top.str("socket", proto.DefaultPath),
			SocketMode:  0o660,
			SocketGID:   -1,
			IdleTimeout: top.dur("idle_timeout", defaultIdleTimeout),
		},
		DefaultToken:   top.str("default_token", ""),
		MaxConnections: top.int("max_connections", defaultMaxConns),
		MaxPerUID:      top.int("max_connections_per_uid", defaultMaxPerUID),
		MetricsListen:  top.str("metrics_listen", ""),
		FirstTokenWait: top.dur("first_token_wait", defaultFirstWait),
		Tokens:         map[string]*TokenConfig{},
		Proxies:        map[string]*Proxy{},
	}
	r.socket(top, c)
	c.LogLevel = r.logLevel(top.str("log_level", "info"))
	r.limits(top, c)
	r.checkMetricsListen(c.MetricsListen, top.bool("metrics_listen_public", false))
	if p, ok := strings.CutPrefix(c.MetricsListen, "unix:"); ok && filepath.Clean(p) == filepath.Clean(c.Socket) {
		r.fail("metrics_listen", "%q is the token socket's own path (socket): give the metrics a socket of their own, such as \"unix:/run/tokend/metrics.sock\"", c.MetricsListen)
	}

	r.tokens(raw["token"], c)
	r.proxies(raw["proxy"], c)
	vault, _ := raw["vault"].(map[string]any)
	v, present := raw["vault"]
	if present && vault == nil {
		r.fail("vault", "want one table [vault], got %s", tomlType(v))
	}
	switch user := c.vaultUser(); {
	case user != "":
		if !present && r.host.getenv("VAULT_ADDR") == "" {
			r.fail("vault", "missing: %s uses Vault; add a [vault] table (address, auth), or give the token its client credentials from files (client_secret_file)", user)
		}
		c.Vault = r.vault(vault)
	case present:
		// Checked, so that a mistake shows before a token needs it, but
		// not started: no token reads Vault.
		r.vault(vault)
		r.warn("vault", "no token uses Vault (every one reads its credentials from files, and none has share_path): the [vault] table is ignored")
	}
	return c
}

// vaultUser names the first token (and key) that needs Vault, or "".
func (c *Config) vaultUser() string {
	for _, name := range slices.Sorted(maps.Keys(c.Tokens)) {
		switch f := c.Tokens[name].Fetch; {
		case !f.Files.Set():
			return fmt.Sprintf("token.%s (kv_path)", name)
		case f.SharePath != "":
			return fmt.Sprintf("token.%s.share_path (the shared entry is in Vault)", name)
		}
	}
	return ""
}

// UsesVault reports whether some token reads Vault: only then is the
// Vault source started.
func (c *Config) UsesVault() bool { return c.vaultUser() != "" }

// socket reads where the socket is made, and with what mode and group.
func (r *reader) socket(top table, c *Config) {
	if !filepath.IsAbs(c.Socket) {
		r.fail("socket", "%q is not an absolute path", c.Socket)
	} else if len(c.Socket) > 107 {
		r.fail("socket", "path is %d bytes; a Unix socket path must be at most 107", len(c.Socket))
	}
	c.SocketMode = r.mode("socket_mode", top.m["socket_mode"], c.SocketMode)
	if g := top.str("socket_group", ""); g != "" {
		gid, err := r.host.group(g)
		if err != nil {
			r.fail("socket_group", "%v", err)
		}
		c.SocketGID = gid
	}
}

func (r *reader) logLevel(lvl string) zerolog.Level {
	l, err := zerolog.ParseLevel(lvl)
	if err != nil || lvl == "" || l == zerolog.NoLevel || l == zerolog.Disabled {
		r.fail("log_level", "unknown level %q: want trace, debug, info, warn or error", lvl)
		return zerolog.InfoLevel
	}
	return l
}

// limits checks the connection caps and the socket's timeouts.
func (r *reader) limits(top table, c *Config) {
	if c.MaxConnections < 1 || c.MaxConnections > 1<<20 {
		r.fail("max_connections", "%d is out of range 1..1048576", c.MaxConnections)
	}
	if c.MaxPerUID < 1 || c.MaxPerUID > 1<<20 {
		r.fail("max_connections_per_uid", "%d is out of range 1..1048576", c.MaxPerUID)
	}
	if c.IdleTimeout < time.Second {
		r.fail("idle_timeout", "%s is too short: a client gets that long to send its request line; use at least \"1s\" (default \"30s\")", c.IdleTimeout)
	}
	if _, set := top.m["max_connections_per_uid"]; c.MaxPerUID > c.MaxConnections && c.MaxConnections >= 1 {
		def := ""
		if !set {
			def = " (the default)"
		}
		r.fail("max_connections_per_uid", "%d%s is above max_connections (%d), so it never applies: set max_connections_per_uid to at most %d", c.MaxPerUID, def, c.MaxConnections, c.MaxConnections)
	}
	if c.FirstTokenWait <= 0 || c.FirstTokenWait > 10*time.Minute {
		r.fail("first_token_wait", "%s is out of range: more than 0, at most 10m", c.FirstTokenWait)
	}
}

// tokens reads the [token.NAME] tables and the default token.
func (r *reader) tokens(v any, c *Config) {
	tokens, _ := v.(map[string]any)
	if v != nil && tokens == nil {
		r.fail("token", "want one table [token.NAME] per token, such as [token.vibes], got %s", tomlType(v))
	}
	for _, name := range slices.Sorted(maps.Keys(tokens)) {
		key := "token." + name
		m, ok := tokens[name].(map[string]any)
		if !ok {
			r.fail(key, "want a table [%s], got %s", key, tomlType(tokens[name]))
			continue
		}
		if !proto.ValidName(name) {
			r.fail(key, "bad token name %q: want 1-64 of A-Z a-z 0-9 . _ -", name)
		}
		c.Tokens[name] = r.token(name, m)
	}
	r.checkSinks(c.Tokens)
	switch {
	case len(c.Tokens) == 0:
		r.fail("token", "no token configured: add a [token.NAME] table")
	case c.DefaultToken == "" && len(c.Tokens) == 1:
		for name := range c.Tokens {
			c.DefaultToken = name
		}
	case c.DefaultToken == "":
		r.fail("default_token", "needed when more than one token is configured (have %s)", strings.Join(slices.Sorted(maps.Keys(c.Tokens)), ", "))
	case c.Tokens[c.DefaultToken] == nil:
		r.fail("default_token", "%q names no [token.%s] table", c.DefaultToken, c.DefaultToken)
	}
}

func (r *reader) vault(m map[string]any) vaultsrc.Config {
	t := r.table("vault", m, vaultKeys...)
	v := vaultsrc.Config{
		Address:       t.str("address", ""),
		Namespace:     t.str("namespace", ""),
		Auth:          t.str("auth", vaultsrc.DefaultAuth),
		TokenFile:     t.path("token_file", secretFile),
		RoleIDFile:    t.path("role_id_file", readFile),
		SecretIDFile:  t.path("secret_id_file", secretFile),
		AppRoleMount:  t.str("approle_mount", vaultsrc.DefaultAppRoleMount),
		CAFile:        t.path("ca_file", readFile),
		TLSServerName: t.str("tls_server_name", ""),
		CertFile:      t.path("cert_file", readFile),
		KeyFile:       t.path("key_file", secretFile),
		CertRole:      t.str("cert_role", ""),
		CertMount:     strings.Trim(t.str("cert_mount", "cert"), "/"),
		JWTFile:       t.path("jwt_file", secretFile),
		Role:          t.str("role", ""),
		JWTMount:      strings.Trim(t.str("jwt_mount", "jwt"), "/"),
	}
	if v.CAFile != "" {
		if _, err := CAPool(v.CAFile, true); err != nil {
			r.fail("vault.ca_file", "%v", err)
		}
	}
	insecure := t.bool("allow_insecure_http", false)
	switch {
	case v.Address != "":
		r.checkURL("vault.address", "", v.Address, insecure)
	case r.host.getenv("VAULT_ADDR") != "":
		r.checkURL("vault.address", "VAULT_ADDR ", r.host.getenv("VAULT_ADDR"), insecure)
	default:
		r.fail("vault.address", "not set, and VAULT_ADDR is empty")
	}
	switch v.Auth {
	case "token":
		if v.TokenFile == "" && r.host.getenv("VAULT_TOKEN") == "" {
			r.fail("vault.token_file", "auth = \"token\" needs token_file (or VAULT_TOKEN in the environment)")
		}
	case "approle":
		if v.RoleIDFile == "" {
			r.fail("vault.role_id_file", "auth = \"approle\" needs role_id_file")
		}
		if v.SecretIDFile == "" {
			r.fail("vault.secret_id_file", "auth = \"approle\" needs secret_id_file")
		}
	case "cert":
		if v.CertFile == "" || v.KeyFile == "" {
			r.fail("vault.cert_file", "auth = \"cert\" needs cert_file and key_file (the host's client certificate)")
		}
	case "jwt":
		if v.JWTFile == "" {
			r.fail("vault.jwt_file", "auth = \"jwt\" needs jwt_file")
		}
		if v.Role == "" {
			r.fail("vault.role", "auth = \"jwt\" needs role")
		}
	default:
		r.fail("vault.auth", "unknown auth %q: want \"token\", \"approle\", \"cert\" or \"jwt\"", v.Auth)
	}
	return v
}

// mode reads an octal mode string such as "0660".
func (r *reader) mode(key string, v any, def os.FileMode) os.FileMode {
	switch v := v.(type) {
	case nil:
	case string:
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o777 {
			r.fail(key, "bad mode %q: want an octal string such as \"0660\"", v)
		} else {
			return os.FileMode(m)
		}
	case int64:
		// TOML integers are decimal: 660 would be mode 01224, and 438 is 0666.
		r.fail(key, "%d is a decimal integer (mode %04o); write the mode as an octal string such as \"0660\"", v, v)
	default:
		r.fail(key, "want an octal string such as \"0660\", got %s", tomlType(v))
	}
	return def
}

// checkURL checks an http(s) URL that secrets are sent to: https, unless
// the host is loopback or the operator allowed plain http for it. from
// says where the value came from when not the key ("VAULT_ADDR "). It
// returns the parsed URL, or nil.
func (r *reader) checkURL(key, from, raw string, allowHTTP bool) *url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		r.fail(key, "%s%q is not an http(s) URL", from, raw)
		return nil
	}
	shown := u.Redacted() // never echo a password from the URL
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.fail(key, "%s%q is not an http(s) URL", from, shown)
		return nil
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			r.fail(key, "%s%q: port %s is out of range 1-65535", from, shown, p)
			return nil
		}
	}
	if u.Scheme == "http" && !allowHTTP && !IsLoopback(u.Hostname()) {
		r.fail(key, "%s%q is plain http to a host that is not loopback, so secrets would cross the network in clear: use https, or set allow_insecure_http = true beside it", from, shown)
	}
	return u
}

// checkMetricsListen checks metrics_listen: "unix:/abs/path", or an IP
// address (or localhost) and port; loopback only, unless public says so.
func (r *reader) checkMetricsListen(addr string, public bool) {
	const want = `want "127.0.0.1:9464", "[::1]:9464" or "unix:/run/tokend/metrics.sock"`
	if addr == "" {
		return
	}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !filepath.IsAbs(path) || len(path) > 107 {
			r.fail("metrics_listen", "%q: a Unix socket needs an absolute path of at most 107 bytes; %s", addr, want)
		}
		return
	}
	host, port, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		r.fail("metrics_listen", "%q is not an address with a port; %s", addr, want)
		return
	}
	if n < 1 || n > 65535 {
		r.fail("metrics_listen", "%q: port %d is out of range 1-65535", addr, n)
		return
	}
	if host != "localhost" && net.ParseIP(host) == nil && host != "" {
		r.fail("metrics_listen", "%q: the host must be an IP address or localhost; %s", addr, want)
		return
	}
	if !public && !IsLoopback(host) {
		r.fail("metrics_listen", "%q is reachable from other machines: use a loopback address, or set metrics_listen_public = true", addr)
	}
}

func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
