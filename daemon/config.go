package daemon

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/rs/zerolog"

	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/vaultsrc"
)

// DefaultConfigPath is read when no --config is given.
const DefaultConfigPath = "/etc/tokend/tokend.toml"

// Config is a validated configuration, ready to run.
type Config struct {
	Listen
	LogLevel       zerolog.Level
	DefaultToken   string
	MaxConnections int
	MaxPerUID      int // max_connections_per_uid; root and tokend's own uid are exempt
	Vault          vaultsrc.Config
	Tokens         map[string]*TokenConfig
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
}

// Fetch is how a token is obtained: everything its keeper needs. A reload
// that leaves it equal (==) keeps the keeper and its current token; a
// change to the allow lists alone applies at once.
type Fetch struct {
	Name           string
	TokenURL       string
	Scope          string
	ClientAuth     string // "basic+body", "basic" or "body"
	Secret         vaultsrc.Secret
	MinRemaining   time.Duration
	RetryMax       time.Duration
	RequestTimeout time.Duration
}

// The documented defaults.
const (
	defaultScope        = ""
	defaultClientAuth   = "basic+body"
	defaultMinRemaining = 60 * time.Second
	defaultRetryMax     = 30 * time.Second
	defaultTimeout      = 10 * time.Second
	defaultIdleTimeout  = 30 * time.Second
	defaultMaxConns     = 1024
	defaultMaxPerUID    = 64
)

// ConfigError lists every problem found in a configuration file.
type ConfigError struct {
	File     string
	Problems []string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("config %q: %s", e.File, strings.Join(e.Problems, "; "))
}

// LoadConfig reads and validates a configuration file. Every problem is
// reported, each naming its key and line.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &ConfigError{File: path, Problems: []string{err.Error()}}
	}
	return ParseConfig(path, data)
}

// ParseConfig is LoadConfig on bytes already read; path is for messages.
func ParseConfig(path string, data []byte) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{File: path, Problems: []string{fmt.Sprintf("line %d: %s", pe.Position.Line, pe.Message)}}
		}
		return nil, &ConfigError{File: path, Problems: []string{err.Error()}}
	}
	r := &reader{lines: keyLines(data)}
	c := r.config(raw)
	if len(r.problems) > 0 {
		return nil, &ConfigError{File: path, Problems: r.problems}
	}
	return c, nil
}

// reader walks the decoded TOML, checking types and collecting problems.
type reader struct {
	lines    map[string]int
	problems []string
}

func (r *reader) fail(key, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if n, ok := r.lines[key]; ok {
		r.problems = append(r.problems, fmt.Sprintf("line %d: %s: %s", n, key, msg))
	} else {
		r.problems = append(r.problems, fmt.Sprintf("%s: %s", key, msg))
	}
}

// table is one TOML table with the keys it allows.
type table struct {
	r      *reader
	prefix string
	m      map[string]any
}

func (r *reader) table(prefix string, m map[string]any, known ...string) table {
	allowed := map[string]bool{}
	for _, k := range known {
		allowed[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !allowed[k] {
			r.fail(join(prefix, k), "unknown key")
		}
	}
	return table{r: r, prefix: prefix, m: m}
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func (t table) str(k, def string) string {
	v, ok := t.m[k]
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		t.r.fail(join(t.prefix, k), "want a string, got %s", tomlType(v))
		return def
	}
	return s
}

func (t table) int(k string, def int) int {
	v, ok := t.m[k]
	if !ok {
		return def
	}
	n, ok := v.(int64)
	if !ok {
		t.r.fail(join(t.prefix, k), "want an integer, got %s", tomlType(v))
		return def
	}
	return int(n)
}

func (t table) bool(k string, def bool) bool {
	v, ok := t.m[k]
	if !ok {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		t.r.fail(join(t.prefix, k), "want true or false, got %s", tomlType(v))
		return def
	}
	return b
}

func (t table) dur(k string, def time.Duration) time.Duration {
	v, ok := t.m[k]
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		t.r.fail(join(t.prefix, k), "want a duration string such as \"60s\" or \"2m\", got %s", tomlType(v))
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		t.r.fail(join(t.prefix, k), "bad duration %q: want e.g. \"60s\" or \"2m\"", s)
		return def
	}
	return d
}

func (t table) list(k string) []any {
	v, ok := t.m[k]
	if !ok {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		t.r.fail(join(t.prefix, k), "want an array, got %s", tomlType(v))
		return nil
	}
	return l
}

// path reads a file path, expanding ${CREDENTIALS_DIRECTORY} so secrets can
// come from systemd's LoadCredential=.
func (t table) path(k string) string {
	p := t.str(k, "")
	if !strings.Contains(p, "${CREDENTIALS_DIRECTORY}") {
		return p
	}
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		t.r.fail(join(t.prefix, k), "%q uses ${CREDENTIALS_DIRECTORY}, which is not set (is tokend running under systemd with LoadCredential=?)", p)
		return p
	}
	return strings.ReplaceAll(p, "${CREDENTIALS_DIRECTORY}", dir)
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date"
	}
	return fmt.Sprintf("%T", v)
}

func (r *reader) config(raw map[string]any) *Config {
	top := r.table("", raw, "socket", "socket_mode", "socket_group", "log_level", "default_token",
		"max_connections", "max_connections_per_uid", "idle_timeout", "vault", "token")
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
		Tokens:         map[string]*TokenConfig{},
	}
	if !filepath.IsAbs(c.Socket) {
		r.fail("socket", "%q is not an absolute path", c.Socket)
	} else if len(c.Socket) > 107 {
		r.fail("socket", "path is %d bytes; a Unix socket path must be at most 107", len(c.Socket))
	}
	switch v := raw["socket_mode"].(type) {
	case nil:
	case string:
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o777 {
			r.fail("socket_mode", "bad mode %q: want an octal string such as \"0660\"", v)
		} else {
			c.SocketMode = os.FileMode(m)
		}
	case int64:
		// TOML integers are decimal: 660 would be mode 01224, and 438 is 0666.
		r.fail("socket_mode", "%d is a decimal integer (mode %04o); write the mode as an octal string such as \"0660\"", v, v)
	default:
		r.fail("socket_mode", "want an octal string such as \"0660\", got %s", tomlType(v))
	}
	if g := top.str("socket_group", ""); g != "" {
		gid, err := lookupGroup(g)
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
	if c.IdleTimeout <= 0 {
		r.fail("idle_timeout", "must be more than 0")
	}

	vault, _ := raw["vault"].(map[string]any)
	if v, ok := raw["vault"]; ok && vault == nil {
		r.fail("vault", "want a table [vault], got %s", tomlType(v))
	}
	c.Vault = r.vault(vault)

	tokens, _ := raw["token"].(map[string]any)
	if v, ok := raw["token"]; ok && tokens == nil {
		r.fail("token", "want tables [token.NAME], got %s", tomlType(v))
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
	t := r.table("vault", m, "address", "namespace", "auth", "token_file", "role_id_file", "secret_id_file", "approle_mount", "allow_insecure_http")
	v := vaultsrc.Config{
		Address:      t.str("address", ""),
		Namespace:    t.str("namespace", ""),
		Auth:         t.str("auth", vaultsrc.DefaultAuth),
		TokenFile:    t.path("token_file"),
		RoleIDFile:   t.path("role_id_file"),
		SecretIDFile: t.path("secret_id_file"),
		AppRoleMount: t.str("approle_mount", vaultsrc.DefaultAppRoleMount),
	}
	insecure := t.bool("allow_insecure_http", false)
	switch {
	case v.Address != "":
		r.checkURL("vault.address", "", v.Address, insecure)
	case os.Getenv("VAULT_ADDR") != "":
		r.checkURL("vault.address", "VAULT_ADDR ", os.Getenv("VAULT_ADDR"), insecure)
	default:
		r.fail("vault.address", "not set, and VAULT_ADDR is empty")
	}
	switch v.Auth {
	case "token":
		if v.TokenFile == "" && os.Getenv("VAULT_TOKEN") == "" {
			r.fail("vault.token_file", "auth = \"token\" needs token_file (or VAULT_TOKEN in the environment)")
		}
	case "approle":
		if v.RoleIDFile == "" {
			r.fail("vault.role_id_file", "auth = \"approle\" needs role_id_file")
		}
		if v.SecretIDFile == "" {
			r.fail("vault.secret_id_file", "auth = \"approle\" needs secret_id_file")
		}
	default:
		r.fail("vault.auth", "unknown auth %q: want \"token\" or \"approle\"", v.Auth)
	}
	return v
}

func (r *reader) token(name string, m map[string]any) *TokenConfig {
	prefix := "token." + name
	t := r.table(prefix, m, "token_url", "scope", "client_auth", "kv_mount", "kv_path", "kv_version",
		"client_id_field", "client_secret_field", "min_remaining", "retry_max", "request_timeout",
		"allow_users", "allow_groups", "allow_uids", "allow_gids", "allow_insecure_http")
	tc := &TokenConfig{Fetch: Fetch{
		Name:       name,
		TokenURL:   t.str("token_url", ""),
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
	}}
	if tc.TokenURL == "" {
		r.fail(prefix+".token_url", "missing: the token endpoint, e.g. \"https://api.example.com/oauth2/token\"")
	} else if u := r.checkURL(prefix+".token_url", "", tc.TokenURL, t.bool("allow_insecure_http", false)); u != nil && u.User != nil {
		r.fail(prefix+".token_url", "must not carry credentials; they come from Vault")
	}
	switch tc.ClientAuth {
	case "basic+body", "basic", "body":
	default:
		r.fail(prefix+".client_auth", "unknown mode %q: want \"basic+body\", \"basic\" or \"body\"", tc.ClientAuth)
	}
	if tc.Secret.Mount == "" {
		r.fail(prefix+".kv_mount", "must not be empty")
	}
	if tc.Secret.Path == "" {
		r.fail(prefix+".kv_path", "missing: the secret's path under kv_mount, e.g. \"tokend/vibes\"")
	}
	if v := tc.Secret.Version; v != 1 && v != 2 {
		r.fail(prefix+".kv_version", "%d: want 1 or 2", v)
	}
	if tc.RetryMax <= 0 {
		r.fail(prefix+".retry_max", "must be more than 0")
	}
	if tc.RequestTimeout <= 0 {
		r.fail(prefix+".request_timeout", "must be more than 0")
	}
	for _, f := range []struct{ key, val string }{{"client_id_field", tc.Secret.IDField}, {"client_secret_field", tc.Secret.SecretField}} {
		if f.val == "" {
			r.fail(prefix+"."+f.key, "must not be empty")
		}
	}
	tc.Access = r.access(t)
	return tc
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
	if u.Scheme == "http" && !allowHTTP && !isLoopback(u.Hostname()) {
		r.fail(key, "%s%q is plain http to a host that is not loopback, so secrets would cross the network in clear: use https, or set allow_insecure_http = true beside it", from, shown)
	}
	return u
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
		u, err := user.Lookup(name)
		if err != nil {
			r.fail(t.prefix+".allow_users", "unknown user %q", name)
			continue
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		a.UIDs = append(a.UIDs, uint32(uid))
	}
	for _, v := range t.list("allow_groups") {
		name, ok := v.(string)
		if !ok {
			r.fail(t.prefix+".allow_groups", "want group names (strings), got %s", tomlType(v))
			continue
		}
		gid, err := lookupGroup(name)
		if err != nil {
			r.fail(t.prefix+".allow_groups", "%v", err)
			continue
		}
		a.GIDs = append(a.GIDs, uint32(gid))
	}
	for _, k := range []string{"allow_uids", "allow_gids"} {
		for _, v := range t.list(k) {
			n, ok := v.(int64)
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

func lookupGroup(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("unknown group %q", name)
	}
	return strconv.Atoi(g.Gid)
}

// keyLines maps each dotted key to the line that sets it. The TOML library
// does not expose positions, and a line scan is enough for the flat tables
// of this format (multi-line values only lose their line numbers).
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	prefix := ""
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '[':
			end := strings.LastIndexByte(line, ']')
			if end < 0 {
				continue
			}
			prefix = unquoteKey(strings.Trim(line[:end], "[] "))
			if _, ok := lines[prefix]; !ok {
				lines[prefix] = i + 1
			}
		default:
			k, _, ok := strings.Cut(line, "=")
			if !ok {
				continue
			}
			key := join(prefix, unquoteKey(strings.TrimSpace(k)))
			if _, ok := lines[key]; !ok {
				lines[key] = i + 1
			}
		}
	}
	return lines
}

func unquoteKey(k string) string {
	parts := strings.Split(k, ".")
	for i, p := range parts {
		parts[i] = strings.Trim(strings.TrimSpace(p), `"'`)
	}
	return strings.Join(parts, ".")
}
