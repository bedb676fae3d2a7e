package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/daemon/filesrc"
)

const goodConfig = `
socket = "/run/tokend/tokend.sock"
socket_mode = "0660"
log_level = "debug"
default_token = "vibes"

[vault]
address = "http://127.0.0.1:8200"
auth = "approle"
role_id_file = "/etc/tokend/role-id"
secret_id_file = "${CREDENTIALS_DIRECTORY}/vault-secret-id"

[token.vibes]
token_url = "https://api.example.com/oauth2/token"
scope = "https://rbm.vibes.com/rbm.agents"
kv_path = "tokend/vibes"
min_remaining = "90s"
allow_uids = [1000]
allow_groups = ["root"]

[token.other]
token_url = "https://idp.example.com/oauth2/token"
client_auth = "basic"
kv_mount = "kv1"
kv_version = 1
kv_path = "other"
`

func TestConfigGood(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "/run/credentials/tokend.service")
	c, err := ParseConfig("t.toml", []byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.SocketMode != 0o660 || c.DefaultToken != "vibes" || len(c.Tokens) != 2 || c.MaxConnections != 1024 {
		t.Errorf("top level: %+v", c)
	}
	if c.Vault.SecretIDFile != "/run/credentials/tokend.service/vault-secret-id" {
		t.Errorf("CREDENTIALS_DIRECTORY not expanded: %q", c.Vault.SecretIDFile)
	}
	v := c.Tokens["vibes"]
	if v.ClientAuth != "basic+body" || v.MinRemaining != 90*time.Second || v.RetryMax != 30*time.Second ||
		v.RequestTimeout != 10*time.Second || v.Secret.Mount != "secret" || v.Secret.Version != 2 ||
		v.Secret.IDField != "client_id" || v.Secret.SecretField != "client_secret" {
		t.Errorf("vibes defaults: %+v", v)
	}
	if len(v.Access.UIDs) != 1 || v.Access.UIDs[0] != 1000 || len(v.Access.GIDs) != 1 || v.Access.GIDs[0] != 0 {
		t.Errorf("vibes access: %+v", v.Access)
	}
	if o := c.Tokens["other"]; o.Secret.Version != 1 || o.Secret.Mount != "kv1" || o.ClientAuth != "basic" {
		t.Errorf("other: %+v", o)
	}
}

// Every problem is reported, with its key and line.
func TestConfigProblems(t *testing.T) {
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_TOKEN", "")
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	bad := `socket = "relative.sock"
socket_mode = 660
log_level = "loud"
max_connections = "many"
colour = "blue"

[vault]
auth = "kerberos"
token_file = "${CREDENTIALS_DIRECTORY}/t"

[token.a]
token_url = "ftp://x"
client_auth = "mtls"
kv_version = 3
min_remaining = 60
retry_max = "soon"
allow_users = ["no-such-user-here"]
allow_uids = ["x"]
spare = 1

[token.b]
token_url = "https://user:pw@x/oauth2/token"
kv_path = "b"
max_connections_per_uid = 0

[token.c]
token_url = "http://user:pw@api.example.com/oauth2/token"
kv_path = "c"
allow_insecure_http = "yes"

[token.d]
token_url = "http://api.example.com/oauth2/token"
kv_path = "d"
allow_insecure_http = true

[token.e]
token_url = "http://[::1]:8080/oauth2/token"
kv_path = "e"
`
	_, err := ParseConfig("bad.toml", []byte(bad))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("want *ConfigError, got %v", err)
	}
	want := []string{
		`line 1: socket: "relative.sock" is not an absolute path`,
		`line 2: socket_mode: 660 is a decimal integer (mode 1224); write the mode as an octal string such as "0660"`,
		`line 3: log_level: unknown level "loud"`,
		`line 4: max_connections: want an integer, got a string`,
		`line 5: colour: unknown key`,
		`line 8: vault.auth: unknown auth "kerberos"`,
		`line 9: vault.token_file: "${CREDENTIALS_DIRECTORY}/t" uses ${CREDENTIALS_DIRECTORY}, which is not set`,
		`vault.address: not set, and VAULT_ADDR is empty`,
		`line 12: token.a.token_url: "ftp://x" is not an http(s) URL`,
		`line 13: token.a.client_auth: unknown mode "mtls"`,
		`line 14: token.a.kv_version: 3: want 1 or 2`,
		`line 15: token.a.min_remaining: want a duration string`,
		`line 16: token.a.retry_max: bad duration "soon"`,
		`line 17: token.a.allow_users: unknown user "no-such-user-here"`,
		`line 18: token.a.allow_uids: "x" is a string: ids are numbers, written without quotes`,
		`line 19: token.a.spare: unknown key`,
		`token.a.kv_path: missing`,
		`line 22: token.b.token_url: must not carry credentials`,
		`line 24: token.b.max_connections_per_uid: unknown key in [token.b]: max_connections_per_uid is a top-level key; move it above the first [table]`,
		`line 27: token.c.token_url: "http://user:xxxxx@api.example.com/oauth2/token" is plain http to a host that is not loopback`,
		`line 29: token.c.allow_insecure_http: want true or false, got a string`,
		`default_token: needed when more than one token is configured (have a, b, c, d, e)`,
	}
	got := strings.Join(ce.Problems, "\n")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing problem %q in:\n%s", w, got)
		}
	}
	for _, never := range []string{"token.d.", "token.e."} {
		if strings.Contains(got, never) {
			t.Errorf("%s: allowed or loopback http refused:\n%s", never, got)
		}
	}
	if strings.Contains(got, "pw@") || strings.Contains(err.Error(), "user:pw") {
		t.Errorf("credentials from token_url echoed: %s", got)
	}
}

func TestConfigSyntaxError(t *testing.T) {
	_, err := ParseConfig("x.toml", []byte("socket = \"/a\"\nlog_level = = 1\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("syntax error without line: %v", err)
	}
}

func TestConfigMinimal(t *testing.T) {
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:8200")
	t.Setenv("VAULT_TOKEN", "from-env")
	c, err := ParseConfig("m.toml", []byte("[token.only]\ntoken_url = \"http://127.0.0.1/oauth2/token\"\nkv_path = \"p\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DefaultToken != "only" || c.Socket != "/run/tokend/tokend.sock" || c.Vault.Auth != "token" {
		t.Errorf("%+v", c)
	}
}

// The example shipped with the package must stay valid.
func TestConfigExample(t *testing.T) {
	path := daemontest.Root("packaging", "tokend.toml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "/run/credentials/tokend.service")
	if _, err := ParseConfig(path, data); err != nil {
		t.Fatal(err)
	}
}

// Parsing asks the machine only through host: users, groups and the
// environment can be whatever the test says.
func TestConfigHost(t *testing.T) {
	h := host{
		getenv: func(k string) string {
			return map[string]string{"VAULT_ADDR": "https://vault.test:8200", "VAULT_TOKEN": "t"}[k]
		},
		user: func(name string) (uint32, error) {
			if name == "alice" {
				return 1234, nil
			}
			return 0, fmt.Errorf("unknown user %q", name)
		},
		group: func(name string) (int, error) {
			if name == "team" {
				return 4321, nil
			}
			return -1, fmt.Errorf("unknown group %q", name)
		},
	}
	cfg := "socket_group = \"team\"\n[token.a]\ntoken_url = \"https://x/oauth2/token\"\nkv_path = \"p\"\nallow_users = [\"alice\"]\nallow_groups = [\"team\"]\n"
	c, err := parseConfig("h.toml", []byte(cfg), h)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Tokens["a"].Access; !slices.Equal(a.UIDs, []uint32{1234}) || !slices.Equal(a.GIDs, []uint32{4321}) || c.SocketGID != 4321 {
		t.Errorf("access %+v, socket gid %d", a, c.SocketGID)
	}
	_, err = parseConfig("h.toml", []byte(strings.Replace(cfg, `["alice"]`, `["bob"]`, 1)), h)
	if err == nil || !strings.Contains(err.Error(), `line 5: token.a.allow_users: unknown user "bob"`) {
		t.Errorf("unknown user: %v", err)
	}
}

// metrics_listen: loopback addresses and absolute unix paths; anything
// reachable from other machines only with metrics_listen_public.
func TestConfigMetricsListen(t *testing.T) {
	base := "[vault]\naddress = \"http://127.0.0.1:8200\"\ntoken_file = \"/t\"\n[token.a]\ntoken_url = \"https://x/t\"\nkv_path = \"a\"\n"
	for addr, want := range map[string]string{
		`"127.0.0.1:9464"`:                  "",
		`"[::1]:9464"`:                      "",
		`"localhost:9464"`:                  "",
		`"unix:/run/tokend-metrics/m.sock"`: "",
		`"0.0.0.0:9464"`:                    `line 1: metrics_listen: "0.0.0.0:9464" is reachable from other machines: use a loopback address, or set metrics_listen_public = true`,
		`":9464"`:                           `line 1: metrics_listen: ":9464" is reachable from other machines`,
		`"10.1.2.3:9464"`:                   `line 1: metrics_listen: "10.1.2.3:9464" is reachable from other machines`,
		`"127.0.0.1"`:                       `line 1: metrics_listen: "127.0.0.1" is not an address with a port`,
		`"127.0.0.1:http"`:                  `line 1: metrics_listen: "127.0.0.1:http" is not an address with a port`,
		`"example.com:9464"`:                `line 1: metrics_listen: "example.com:9464": the host must be an IP address or localhost`,
		`"unix:m.sock"`:                     `line 1: metrics_listen: "unix:m.sock": a Unix socket needs an absolute path`,
		`9464`:                              `line 1: metrics_listen: want a string, got an integer`,
	} {
		_, err := ParseConfig("m.toml", []byte("metrics_listen = "+addr+"\n"+base))
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", addr, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: got %v\nwant %s", addr, err, want)
		}
	}
	if _, err := ParseConfig("m.toml", []byte("metrics_listen = \"0.0.0.0:9464\"\nmetrics_listen_public = true\n"+base)); err != nil {
		t.Errorf("public: %v", err)
	}
}

// The file sink's keys: defaults, a world-writable directory refused (as
// /tmp is), modes as octal strings, owner and group resolved.
func TestConfigFileSink(t *testing.T) {
	h := host{
		getenv: func(string) string { return "" },
		user:   func(name string) (uint32, error) { return 1234, nil },
		group:  func(name string) (int, error) { return 4321, nil },
		stat: func(path string) (os.FileInfo, error) {
			modes := map[string]os.FileMode{"/run/tokend-files": 0o750, "/tmp": 0o1777}
			m, ok := modes[path]
			if !ok {
				return nil, os.ErrNotExist
			}
			return fakeDir(m), nil
		},
	}
	base := "[vault]\naddress = \"https://v\"\ntoken_file = \"/t\"\n[token.a]\ntoken_url = \"https://x/t\"\nkv_path = \"a\"\n"
	c, err := parseConfig("f.toml", []byte(base+"file = \"/run/tokend-files/a.token\"\nfile_owner = \"app\"\nfile_group = \"app\"\n"), h)
	if err != nil {
		t.Fatal(err)
	}
	if f := c.Tokens["a"].File; f == nil || *f != (FileSink{Path: "/run/tokend-files/a.token", Format: "token", Mode: 0o640, UID: 1234, GID: 4321}) {
		t.Errorf("file sink %+v", f)
	}
	for extra, want := range map[string]string{
		"file = \"/tmp/a.token\"\n":                                `line 7: token.a.file: its directory "/tmp" is writable by others (mode 0777)`,
		"file = \"a.token\"\n":                                     `line 7: token.a.file: "a.token" is a relative path`,
		"file = \"/run/tokend-files/a\"\nfile_format = \"yaml\"\n": `line 8: token.a.file_format: unknown format "yaml"`,
		"file = \"/run/tokend-files/a\"\nfile_mode = 640\n":        `line 8: token.a.file_mode: 640 is a decimal integer`,
		"file = \"/run/tokend-files/a\"\nfile_mode = \"0646\"\n":   `line 8: token.a.file_mode: 0646 lets every local user read the token`,
		"file = \"/run/tokend-files/a\"\nfile_mode = \"0644\"\n":   `line 8: token.a.file_mode: 0644 lets every local user read the token`,
		"file_mode = \"0600\"\n":                                   `line 7: token.a.file_mode: set without file`,
	} {
		_, err := parseConfig("f.toml", []byte(base+extra), h)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v\nwant %s", extra, err, want)
		}
	}
}

type fakeDir os.FileMode

func (m fakeDir) Name() string       { return "d" }
func (m fakeDir) Size() int64        { return 0 }
func (m fakeDir) Mode() os.FileMode  { return os.ModeDir | os.FileMode(m)&os.ModePerm }
func (m fakeDir) ModTime() time.Time { return time.Time{} }
func (m fakeDir) IsDir() bool        { return true }
func (m fakeDir) Sys() any           { return nil }

// Exactly one of issuer and token_url.
func TestConfigIssuer(t *testing.T) {
	base := "[vault]\naddress = \"https://v\"\ntoken_file = \"/t\"\n[token.a]\nkv_path = \"a\"\n"
	c, err := parseConfig("i.toml", []byte(base+"issuer = \"https://idp.example.com/tenant\"\n"), thisHost())
	if err != nil || c.Tokens["a"].Issuer != "https://idp.example.com/tenant" || c.Tokens["a"].TokenURL != "" {
		t.Fatalf("issuer: %+v %v", c, err)
	}
	for extra, want := range map[string]string{
		"issuer = \"https://i\"\ntoken_url = \"https://i/t\"\n": "token.a.issuer: set with token_url: give one of them",
		"":                                      "token.a.token_url: missing",
		"issuer = \"http://idp.example.com\"\n": "token.a.issuer: \"http://idp.example.com\" is plain http",
		"issuer = \"https://i/?x=1\"\n":         "token.a.issuer: must be a URL without credentials, query or fragment",
	} {
		if _, err := parseConfig("i.toml", []byte(base+extra), thisHost()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %s", extra, err, want)
		}
	}
}

// private_key_jwt's keys: the key's field defaults to private_key; the
// secret's keys belong to the other modes, and the assertion's to this one.
func TestConfigPrivateKeyJWT(t *testing.T) {
	base := "[vault]\naddress = \"https://v\"\ntoken_file = \"/t\"\n[token.a]\ntoken_url = \"https://i/t\"\nkv_path = \"a\"\n"
	c, err := parseConfig("j.toml", []byte(base+"client_auth = \"private_key_jwt\"\nkey_id_field = \"kid\"\nassertion_alg = \"PS256\"\n"), thisHost())
	if err != nil {
		t.Fatal(err)
	}
	if f := c.Tokens["a"].Fetch; f.Secret.SecretField != "private_key" || f.Secret.KeyIDField != "kid" || f.AssertionAlg != "PS256" {
		t.Errorf("private_key_jwt: %+v", f)
	}
	for extra, want := range map[string]string{
		"client_auth = \"private_key_jwt\"\nclient_secret_field = \"s\"\n": "token.a.client_secret_field: not used with private_key_jwt",
		"client_auth = \"private_key_jwt\"\nassertion_alg = \"HS256\"\n":   `token.a.assertion_alg: "HS256": want "RS256" or "PS256"`,
		"private_key_field = \"k\"\n":                                      `token.a.private_key_field: only for client_auth = "private_key_jwt"`,
	} {
		if _, err := parseConfig("j.toml", []byte(base+extra), thisHost()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %s", extra, err, want)
		}
	}
}

// The new Vault logins and tls_client_auth name what they miss.
func TestConfigVaultAuthAndMTLS(t *testing.T) {
	tok := "[token.a]\ntoken_url = \"https://i/t\"\nkv_path = \"a\"\n"
	for text, want := range map[string]string{
		"[vault]\naddress = \"https://v\"\nauth = \"cert\"\ncert_file = \"/c\"\n" + tok:                 `vault.cert_file: auth = "cert" needs cert_file and key_file`,
		"[vault]\naddress = \"https://v\"\nauth = \"jwt\"\nrole = \"r\"\n" + tok:                        `vault.jwt_file: auth = "jwt" needs jwt_file`,
		"[vault]\naddress = \"https://v\"\nauth = \"jwt\"\njwt_file = \"/j\"\n" + tok:                   `vault.role: auth = "jwt" needs role`,
		"[vault]\naddress = \"https://v\"\nauth = \"kerberos\"\n" + tok:                                 `unknown auth "kerberos": want "token", "approle", "cert" or "jwt"`,
		"[vault]\naddress = \"https://v\"\ntoken_file = \"/t\"\n" + tok + "tls_cert_field = \"c\"\n":    `token.a.tls_cert_field: only for client_auth = "tls_client_auth"`,
		"[vault]\naddress = \"https://v\"\ntoken_file = \"/t\"\nca_file = \"/nonexistent.pem\"\n" + tok: `vault.ca_file: open /nonexistent.pem`,
	} {
		if _, err := parseConfig("v.toml", []byte(text), thisHost()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %s", text, err, want)
		}
	}
	c, err := parseConfig("v.toml", []byte("[vault]\naddress = \"https://v\"\nauth = \"cert\"\ncert_file = \"/c\"\nkey_file = \"/k\"\n"+tok+"client_auth = \"tls_client_auth\"\n"), thisHost())
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Tokens["a"].Secret; s.CertField != "tls_cert" || s.SecretField != "tls_key" || c.Vault.CertMount != "cert" {
		t.Errorf("defaults: %+v %+v", s, c.Vault)
	}
}

// ${CREDENTIALS_DIRECTORY} works in the new paths too (LoadCredential=).
func TestConfigCredentialsDirectoryPaths(t *testing.T) {
	h := thisHost()
	h.getenv = func(k string) string {
		if k == "CREDENTIALS_DIRECTORY" {
			return "/run/credentials/tokend.service"
		}
		return ""
	}
	h.stat = func(string) (os.FileInfo, error) { return fakeDir(0o700), nil }
	text := `[vault]
address = "https://v"
auth = "cert"
cert_file = "${CREDENTIALS_DIRECTORY}/host.pem"
key_file = "${CREDENTIALS_DIRECTORY}/host-key.pem"
jwt_file = "${CREDENTIALS_DIRECTORY}/vault.jwt"
[token.a]
token_url = "https://i/t"
kv_path = "a"
file = "${CREDENTIALS_DIRECTORY}/a.token"
`
	c, err := parseConfig("c.toml", []byte(text), h)
	if err != nil {
		t.Fatal(err)
	}
	const dir = "/run/credentials/tokend.service/"
	if c.Vault.CertFile != dir+"host.pem" || c.Vault.KeyFile != dir+"host-key.pem" || c.Vault.JWTFile != dir+"vault.jwt" || c.Tokens["a"].File.Path != dir+"a.token" {
		t.Errorf("not expanded: %+v, file %+v", c.Vault, c.Tokens["a"].File)
	}
}

// share_path: share_mount defaults to kv_mount, which must then be KV v2;
// the entry is never the client secret's own.
func TestConfigSharePath(t *testing.T) {
	base := "[vault]\naddress = \"https://v\"\ntoken_file = \"/t\"\n[token.a]\ntoken_url = \"https://i/t\"\nkv_path = \"a\"\n"
	c, err := parseConfig("s.toml", []byte(base+"share_path = \"/tokend/shared/a/\"\n"), thisHost())
	if err != nil {
		t.Fatal(err)
	}
	if f := c.Tokens["a"].Fetch; f.SharePath != "tokend/shared/a" || f.ShareMount != "secret" {
		t.Errorf("share_path: %q on %q, want tokend/shared/a on secret", f.SharePath, f.ShareMount)
	}
	c, err = parseConfig("s.toml", []byte(base+"kv_version = 1\nkv_mount = \"kv1\"\nshare_path = \"s\"\nshare_mount = \"kv2\"\n"), thisHost())
	if err != nil || c.Tokens["a"].ShareMount != "kv2" {
		t.Fatalf("share_mount: %v", err)
	}
	if c, err := parseConfig("s.toml", []byte(base), thisHost()); err != nil || c.Tokens["a"].SharePath != "" {
		t.Errorf("no share_path: %v", err)
	}
	for extra, want := range map[string]string{
		"share_mount = \"kv2\"\n":                   "line 7: token.a.share_mount: set without share_path",
		"kv_version = 1\nshare_path = \"s\"\n":      `line 8: token.a.share_path: needs a KV v2 mount (check-and-set writes), and kv_mount "secret" is KV v1: set share_mount`,
		"share_path = \"a\"\n":                      `line 7: token.a.share_path: "a" is the client secret's own path`,
		"share_path = \"s\"\nshare_mount = \"/\"\n": "line 8: token.a.share_mount: must not be empty",
	} {
		if _, err := parseConfig("s.toml", []byte(base+extra), thisHost()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %s", extra, err, want)
		}
	}
}

// Client credentials from files: each client_auth's keys, read into
// Files; no [vault] needed; a token from files and one from Vault side by
// side need [vault], and each says its source.
func TestConfigFileCredentials(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "/run/credentials/tokend.service")
	head := "[token.a]\ntoken_url = \"https://i/t\"\n"
	for body, want := range map[string]Fetch{
		"client_id = \"cid\"\nclient_secret_file = \"${CREDENTIALS_DIRECTORY}/vibes-secret\"\n": {
			ClientAuth: "basic+body", Files: filesrc.Files{ID: "cid", SecretFile: "/run/credentials/tokend.service/vibes-secret"}},
		"client_id_file = \"/etc/tokend/id\"\nclient_secret_file = \"/etc/tokend/secret\"\nclient_auth = \"basic\"\n": {
			ClientAuth: "basic", Files: filesrc.Files{IDFile: "/etc/tokend/id", SecretFile: "/etc/tokend/secret"}},
		"client_auth = \"private_key_jwt\"\nclient_id = \"cid\"\nprivate_key_file = \"/etc/tokend/key.pem\"\nassertion_kid = \"k1\"\nassertion_alg = \"PS256\"\n": {
			ClientAuth: "private_key_jwt", AssertionAlg: "PS256", Files: filesrc.Files{ID: "cid", PrivateKeyFile: "/etc/tokend/key.pem", KeyID: "k1"}},
		"client_auth = \"tls_client_auth\"\nclient_id = \"cid\"\ntls_cert_file = \"/etc/tokend/c.pem\"\ntls_key_file = \"/etc/tokend/k.pem\"\n": {
			ClientAuth: "tls_client_auth", Files: filesrc.Files{ID: "cid", CertFile: "/etc/tokend/c.pem", KeyFile: "/etc/tokend/k.pem"}},
	} {
		c, err := parseConfig("f.toml", []byte(head+body), thisHost())
		if err != nil {
			t.Errorf("%q: %v", body, err)
			continue
		}
		f := c.Tokens["a"].Fetch
		if f.Files != want.Files || f.ClientAuth != want.ClientAuth || f.AssertionAlg != want.AssertionAlg || f.Secret.Path != "" || f.Source() != "file" {
			t.Errorf("%q: %+v, want %+v", body, f, want)
		}
		if c.UsesVault() {
			t.Errorf("%q: uses Vault", body)
		}
	}
	mixed := "[vault]\naddress = \"https://v\"\ntoken_file = \"/t\"\n" + head + "client_id = \"cid\"\nclient_secret_file = \"/s\"\n[token.b]\ntoken_url = \"https://i/t\"\nkv_path = \"b\"\n"
	c, err := parseConfig("m.toml", []byte("default_token = \"a\"\n"+mixed), thisHost())
	if err != nil {
		t.Fatal(err)
	}
	if !c.UsesVault() || c.Tokens["a"].Source() != "file" || c.Tokens["b"].Source() != "vault" || c.Vault.Address != "https://v" {
		t.Errorf("a file token and a Vault token: uses Vault %v, sources %s/%s", c.UsesVault(), c.Tokens["a"].Source(), c.Tokens["b"].Source())
	}
}
