package daemon

import (
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
	"tls_cert_field", "tls_key_field", "max_fetches_per_hour", "share_path", "share_mount"}

func (r *reader) config(raw map[string]any) *Config {
	top := r.table("", raw, append(slices.Clone(topLevelKeys), "vault", "token")...)
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
	}
	if !filepath.IsAbs(c.Socket) {
		r.fail("socket", "%q is not an absolute path", c.Socket)
	} else if len(c.Socket) > 107 {
		r.fail("socket", "path is %d bytes; a Unix socket path must be at most 107", len(c.Socket))
	}
	c.SocketMode = r.mode("socket_mode", raw["socket_mode"], c.SocketMode)
	if g := top.str("socket_group", ""); g != "" {
		gid, err := r.host.group(g)
		if err != nil {
			r.fail("socket_group", "%v", err)
		}
		c.SocketGID = gid
	}
	lvl := top.str("log_level", "info")
	l, err := zerolog.ParseLevel(lvl)
	if err != nil || lvl == "" || l == zerolog.NoLevel || l == zerolog.Disabled {
		r.fail("log_level", "unknown level %q: want trace, debug, info, warn or error", lvl)
		l = zerolog.InfoLevel
	}
	c.LogLevel = l
	if c.MaxConnections < 1 || c.MaxConnections > 1<<20 {
		r.fail("max_connections", "%d is out of range 1..1048576", c.MaxConnections)
	}
	if c.MaxPerUID < 1 || c.MaxPerUID > 1<<20 {
		r.fail("max_connections_per_uid", "%d is out of range 1..1048576", c.MaxPerUID)
	}
	if c.IdleTimeout < time.Second {
		r.fail("idle_timeout", "%s is too short: a client gets that long to send its request line; use at least \"1s\" (default \"30s\")", c.IdleTimeout)
	}
	if _, set := raw["max_connections_per_uid"]; c.MaxPerUID > c.MaxConnections && c.MaxConnections >= 1 {
		def := ""
		if !set {
			def = " (the default)"
		}
		r.fail("max_connections_per_uid", "%d%s is above max_connections (%d), so it never applies: set max_connections_per_uid to at most %d", c.MaxPerUID, def, c.MaxConnections, c.MaxConnections)
	}
	if c.FirstTokenWait <= 0 || c.FirstTokenWait > 10*time.Minute {
		r.fail("first_token_wait", "%s is out of range: more than 0, at most 10m", c.FirstTokenWait)
	}
	r.checkMetricsListen(c.MetricsListen, top.bool("metrics_listen_public", false))
	if p, ok := strings.CutPrefix(c.MetricsListen, "unix:"); ok && filepath.Clean(p) == filepath.Clean(c.Socket) {
		r.fail("metrics_listen", "%q is the token socket's own path (socket): give the metrics a socket of their own, such as \"unix:/run/tokend/metrics.sock\"", c.MetricsListen)
	}

	vault, _ := raw["vault"].(map[string]any)
	if v, ok := raw["vault"]; ok && vault == nil {
		r.fail("vault", "want one table [vault], got %s", tomlType(v))
	}
	c.Vault = r.vault(vault)

	tokens, _ := raw["token"].(map[string]any)
	if v, ok := raw["token"]; ok && tokens == nil {
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
	return c
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
		if _, err := caPool(v.CAFile, true); err != nil {
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

func (r *reader) token(name string, m map[string]any) *TokenConfig {
	prefix := "token." + name
	t := r.table(prefix, m, tokenKeys...)
	tc := &TokenConfig{Fetch: Fetch{
		Name:       name,
		TokenURL:   t.str("token_url", ""),
		Issuer:     t.str("issuer", ""),
		Scope:      t.str("scope", defaultScope),
		ClientAuth: t.str("client_auth", defaultClientAuth),
		Secret: vaultsrc.Secret{
			Mount:       strings.Trim(t.str("kv_mount", "secret"), "/"),
			Path:        strings.Trim(t.str("kv_path", ""), "/"),
			Version:     t.int("kv_version", 2),
			IDField:     t.str("client_id_field", "client_id"),
			SecretField: t.str("client_secret_field", "client_secret"),
		},
		MinRemaining:   t.dur("min_remaining", defaultMinRemaining),
		RetryMax:       t.dur("retry_max", defaultRetryMax),
		RequestTimeout: t.dur("request_timeout", defaultTimeout),
		MaxPerHour:     t.int("max_fetches_per_hour", defaultMaxPerHour),
	}}
	if tc.MaxPerHour < 1 || tc.MaxPerHour > 100000 {
		r.fail(prefix+".max_fetches_per_hour", "%d is out of range 1..100000", tc.MaxPerHour)
	}
	tc.InsecureHTTP = t.bool("allow_insecure_http", false)
	tc.CAFile, tc.CAOnly = t.path("ca_file", readFile), t.bool("ca_only", false)
	if tc.CAFile != "" {
		if _, err := caPool(tc.CAFile, true); err != nil {
			r.fail(prefix+".ca_file", "%v", err)
		}
	} else if tc.CAOnly {
		r.fail(prefix+".ca_only", "set without ca_file")
	}
	switch {
	case tc.TokenURL == "" && tc.Issuer == "":
		r.fail(prefix+".token_url", "missing: the token endpoint, e.g. \"https://api.example.com/oauth2/token\" (or issuer, to discover it)")
	case tc.TokenURL != "" && tc.Issuer != "":
		r.fail(prefix+".issuer", "set with token_url: give one of them")
	case tc.Issuer != "":
		if u := r.checkURL(prefix+".issuer", "", tc.Issuer, tc.InsecureHTTP); u != nil && (u.User != nil || u.RawQuery != "" || u.Fragment != "") {
			r.fail(prefix+".issuer", "must be a URL without credentials, query or fragment")
		}
	default:
		if u := r.checkURL(prefix+".token_url", "", tc.TokenURL, tc.InsecureHTTP); u != nil && u.User != nil {
			r.fail(prefix+".token_url", "must not carry credentials; they come from Vault")
		}
	}
	switch tc.ClientAuth {
	case "basic+body", "basic", "body":
		for _, k := range []string{"private_key_field", "key_id_field", "assertion_alg", "assertion_audience", "transit_mount", "transit_key", "assertion_kid"} {
			if _, ok := m[k]; ok {
				r.fail(prefix+"."+k, "only for client_auth = \"private_key_jwt\"")
			}
		}
		for _, k := range []string{"tls_cert_field", "tls_key_field"} {
			if _, ok := m[k]; ok {
				r.fail(prefix+"."+k, "only for client_auth = \"tls_client_auth\"")
			}
		}
	case "tls_client_auth":
		if _, ok := m["client_secret_field"]; ok {
			r.fail(prefix+".client_secret_field", "not used with tls_client_auth: tls_cert_field and tls_key_field name the certificate's fields")
		}
		tc.Secret.CertField = t.str("tls_cert_field", "tls_cert")
		tc.Secret.SecretField = t.str("tls_key_field", "tls_key")
	case "private_key_jwt":
		if _, ok := m["client_secret_field"]; ok {
			r.fail(prefix+".client_secret_field", "not used with private_key_jwt: private_key_field names the key's field")
		}
		tc.Secret.SecretField = t.str("private_key_field", "private_key")
		tc.Secret.KeyIDField = t.str("key_id_field", "")
		if tc.TransitKey = t.str("transit_key", ""); tc.TransitKey != "" {
			// The key stays in Vault: the KV secret holds the client id only.
			for _, k := range []string{"private_key_field", "key_id_field"} {
				if _, ok := m[k]; ok {
					r.fail(prefix+"."+k, "set with transit_key: the key is in Vault Transit, not in KV")
				}
			}
			tc.Secret.SecretField, tc.Secret.KeyIDField = "", ""
			tc.TransitMount = strings.Trim(t.str("transit_mount", "transit"), "/")
			tc.AssertionKID = t.str("assertion_kid", "")
		} else {
			for _, k := range []string{"transit_mount", "assertion_kid"} {
				if _, ok := m[k]; ok {
					r.fail(prefix+"."+k, "only with transit_key")
				}
			}
		}
		tc.AssertionAlg = t.str("assertion_alg", "")
		tc.AssertionAudience = t.str("assertion_audience", "")
		if a := tc.AssertionAlg; a != "" && a != "RS256" && a != "PS256" {
			r.fail(prefix+".assertion_alg", "%q: want \"RS256\" or \"PS256\" (for RSA keys; EC and Ed25519 keys decide their own)", a)
		}
	default:
		r.fail(prefix+".client_auth", "unknown mode %q: want \"basic+body\", \"basic\", \"body\", \"private_key_jwt\" or \"tls_client_auth\"", tc.ClientAuth)
	}
	if tc.Secret.Mount == "" {
		r.fail(prefix+".kv_mount", "must not be empty")
	}
	if tc.Secret.Path == "" {
		r.fail(prefix+".kv_path", "missing: the secret's path under kv_mount, e.g. \"tokend/vibes\"")
	}
	if v := tc.Secret.Version; v != 1 && v != 2 {
		r.fail(prefix+".kv_version", "%d: want 1 or 2", v)
	} else if tc.Secret.Path != "" && tc.Secret.Mount != "" {
		r.checkKVPath(prefix, tc.Secret)
	}
	r.checkDurations(prefix, tc.Fetch)
	for _, f := range []struct{ key, val string }{{"client_id_field", tc.Secret.IDField}, {"client_secret_field", tc.Secret.SecretField}} {
		if f.val == "" && !(f.key == "client_secret_field" && tc.TransitKey != "") {
			r.fail(prefix+"."+f.key, "must not be empty")
		}
	}
	tc.SharePath = strings.Trim(t.str("share_path", ""), "/")
	tc.ShareMount = strings.Trim(t.str("share_mount", tc.Secret.Mount), "/")
	switch _, mount := m["share_mount"]; {
	case tc.SharePath == "" && mount:
		r.fail(prefix+".share_mount", "set without share_path")
	case tc.SharePath != "" && tc.ShareMount == "":
		r.fail(prefix+".share_mount", "must not be empty")
	case tc.SharePath != "" && !mount && tc.Secret.Version != 2:
		r.fail(prefix+".share_path", "needs a KV v2 mount (check-and-set writes), and kv_mount %q is KV v1: set share_mount", tc.Secret.Mount)
	case tc.SharePath != "" && tc.ShareMount == tc.Secret.Mount && tc.SharePath == tc.Secret.Path:
		r.fail(prefix+".share_path", "%q is the client secret's own path: the shared token needs an entry of its own", tc.SharePath)
	}
	tc.Params = r.params(t, m)
	tc.Access = r.access(t)
	tc.File = r.file(t, m)
	return tc
}

// checkSinks refuses two tokens writing the same file: each would
// overwrite the other's token.
func (r *reader) checkSinks(tokens map[string]*TokenConfig) {
	by := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(tokens)) {
		f := tokens[name].File
		if f == nil {
			continue
		}
		if other, ok := by[f.Path]; ok {
			r.fail("token."+name+".file", "%q is also token.%s.file: each token needs a file of its own", f.Path, other)
			continue
		}
		by[f.Path] = name
	}
}

// checkKVPath refuses a kv_path that repeats the mount or the KV v2 API's
// data/ segment: tokend adds both itself, so the read would go to
// secret/data/secret/data/x.
func (r *reader) checkKVPath(prefix string, s vaultsrc.Secret) {
	p := s.Path
	rest, hasMount := strings.CutPrefix(p, s.Mount+"/")
	if !hasMount {
		rest = p
	}
	inner, hasData := strings.CutPrefix(rest, "data/")
	switch {
	case s.Version == 2 && hasData && inner != "":
		r.fail(prefix+".kv_path", "%q repeats %sdata/, which tokend adds itself: write kv_path = %q (the path `vault kv get -mount=%s` takes)", p, mountPrefix(hasMount, s.Mount), inner, s.Mount)
	case hasMount && rest != "":
		r.warn(prefix+".kv_path", "%q starts with the mount %q, which tokend adds itself (kv_mount): write kv_path = %q", p, s.Mount, rest)
	}
}

func mountPrefix(has bool, mount string) string {
	if has {
		return mount + "/"
	}
	return ""
}

// checkDurations refuses durations that cannot do what their keys are for.
func (r *reader) checkDurations(prefix string, f Fetch) {
	switch {
	case f.RetryMax <= 0:
		r.fail(prefix+".retry_max", "must be more than 0")
	case f.RetryMax < time.Second:
		r.fail(prefix+".retry_max", "%s would retry a failing token endpoint many times a second: use at least \"1s\" (default \"30s\")", f.RetryMax)
	case f.RetryMax > time.Hour:
		r.fail(prefix+".retry_max", "%s: a recovered endpoint could wait that long for tokend's next try; use at most \"1h\" (default \"30s\")", f.RetryMax)
	}
	switch {
	case f.RequestTimeout <= 0:
		r.fail(prefix+".request_timeout", "must be more than 0")
	case f.RequestTimeout < 100*time.Millisecond:
		r.fail(prefix+".request_timeout", "%s is too short for a token request (a TLS handshake alone takes longer): use at least \"100ms\", usually seconds (default \"10s\")", f.RequestTimeout)
	case f.RequestTimeout > 5*time.Minute:
		r.fail(prefix+".request_timeout", "%s: a hung token endpoint would hold the refresh that long; use at most \"5m\" (default \"10s\")", f.RequestTimeout)
	case f.RetryMax >= time.Second && f.RequestTimeout > 2*f.RetryMax:
		r.warn(prefix+".request_timeout", "%s is more than twice retry_max (%s): a hung token endpoint delays each retry by the timeout, not the backoff", f.RequestTimeout, f.RetryMax)
	}
	if f.MinRemaining >= 24*time.Hour {
		r.fail(prefix+".min_remaining", "%s: no token is served with less than this left, and client-credentials tokens rarely live a day; use seconds or minutes, such as \"60s\" (the default)", f.MinRemaining)
	}
}

// reservedParams are form fields extra_params may not set: tokend sends
// them itself.
var reservedParams = []string{"grant_type", "client_id", "client_secret", "scope", "audience", "resource"}

// params reads audience, resource and extra_params into the form fields
// they add to a token request (see Fetch.Params).
func (r *reader) params(t table, m map[string]any) string {
	var b strings.Builder
	if a := t.str("audience", ""); a != "" {
		b.WriteString("&audience=" + url.QueryEscape(a))
	}
	for _, v := range t.list("resource") {
		s, ok := v.(string)
		u, err := url.Parse(s)
		switch {
		case !ok:
			r.fail(t.prefix+".resource", "want URIs (strings), got %s", tomlType(v))
			continue
		case err != nil || !u.IsAbs() || u.Fragment != "":
			// RFC 8707 §2: an absolute URI without a fragment.
			r.fail(t.prefix+".resource", "%q is not an absolute URI without a fragment", s)
			continue
		}
		b.WriteString("&resource=" + url.QueryEscape(s))
	}
	switch extra := m["extra_params"].(type) {
	case nil:
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(extra)) {
			v, ok := extra[k].(string)
			switch {
			case slices.Contains(reservedParams, k) || strings.HasPrefix(k, "client_assertion"):
				r.fail(t.prefix+".extra_params", "%q is set by tokend itself; use the key for it (scope, audience, resource) if there is one", k)
			case !ok:
				r.fail(t.prefix+".extra_params", "%s: want a string, got %s", k, tomlType(extra[k]))
			case k == "":
				r.fail(t.prefix+".extra_params", "empty parameter name")
			default:
				b.WriteString("&" + url.QueryEscape(k) + "=" + url.QueryEscape(v))
			}
		}
	default:
		r.fail(t.prefix+".extra_params", "want a table such as { key = \"value\" }, got %s", tomlType(extra))
	}
	return b.String()
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

// file reads a token's file sink; nil when it has none.
func (r *reader) file(t table, m map[string]any) *FileSink {
	path := t.path("file", writtenFile)
	if path == "" {
		for _, k := range []string{"file_format", "file_mode", "file_owner", "file_group"} {
			if _, ok := m[k]; ok {
				r.fail(t.prefix+"."+k, "set without file")
			}
		}
		return nil
	}
	f := &FileSink{Path: path, Format: t.str("file_format", "token"), UID: -1, GID: -1}
	f.Mode = r.mode(t.prefix+".file_mode", m["file_mode"], 0o640)
	switch f.Format {
	case "token", "header", "json":
	default:
		r.fail(t.prefix+".file_format", "unknown format %q: want \"token\", \"header\" or \"json\"", f.Format)
	}
	if !filepath.IsAbs(path) {
		return f // path() said so
	}
	if filepath.Clean(path) != path {
		r.fail(t.prefix+".file", "%q is not a clean absolute path: write %q", path, filepath.Clean(path))
		return f
	}
	// Anyone who can write the directory could swap the file for their own
	// between two writes, or read it while it has its temporary name.
	if fi, err := r.host.stat(filepath.Dir(path)); err == nil && fi.Mode().Perm()&0o002 != 0 {
		r.fail(t.prefix+".file", "its directory %q is writable by others (mode %04o): use a directory only tokend can write, such as RuntimeDirectory=tokend-files", filepath.Dir(path), fi.Mode().Perm())
	}
	if f.Mode&0o007 != 0 {
		r.fail(t.prefix+".file_mode", "%04o lets every local user read the token", f.Mode)
	}
	if u := t.str("file_owner", ""); u != "" {
		if uid, err := r.host.user(u); err != nil {
			r.fail(t.prefix+".file_owner", "%v", err)
		} else {
			f.UID = int(uid)
		}
	}
	if g := t.str("file_group", ""); g != "" {
		if gid, err := r.host.group(g); err != nil {
			r.fail(t.prefix+".file_group", "%v", err)
		} else {
			f.GID = gid
		}
	}
	return f
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
	if u.Scheme == "http" && !allowHTTP && !isLoopback(u.Hostname()) {
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
	if !public && !isLoopback(host) {
		r.fail("metrics_listen", "%q is reachable from other machines: use a loopback address, or set metrics_listen_public = true", addr)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (r *reader) access(t table) Access {
	var a Access
	for _, v := range t.list("allow_users") {
		name, ok := v.(string)
		if !ok {
			r.fail(t.prefix+".allow_users", "want user names (strings), got %s", tomlType(v))
			continue
		}
		uid, err := r.host.user(name)
		if err != nil {
			r.fail(t.prefix+".allow_users", "%v", err)
			continue
		}
		a.UIDs = append(a.UIDs, uid)
	}
	for _, v := range t.list("allow_groups") {
		name, ok := v.(string)
		if !ok {
			r.fail(t.prefix+".allow_groups", "want group names (strings), got %s", tomlType(v))
			continue
		}
		gid, err := r.host.group(name)
		if err != nil {
			r.fail(t.prefix+".allow_groups", "%v", err)
			continue
		}
		a.GIDs = append(a.GIDs, uint32(gid))
	}
	for _, k := range []string{"allow_uids", "allow_gids"} {
		for _, v := range t.list(k) {
			n, ok := v.(int64)
			if s, quoted := v.(string); quoted {
				r.fail(t.prefix+"."+k, "%q is a string: ids are numbers, written without quotes (%s = [%s]); for names use %s", s, k, s, strings.Replace(k, "_uids", "_users", 1))
				continue
			}
			if !ok || n < 0 || n > 1<<32-1 {
				r.fail(t.prefix+"."+k, "want numeric ids, got %v", v)
				continue
			}
			if k == "allow_uids" {
				a.UIDs = append(a.UIDs, uint32(n))
			} else {
				a.GIDs = append(a.GIDs, uint32(n))
			}
		}
	}
	return a
}
