package config

import (
	"strings"

	"github.com/tokend/tokend/vaultsrc"
)

// A token's client credentials from files (client_id, client_secret_file,
// private_key_file, tls_cert_file and tls_key_file), instead of Vault.

// The keys that say where a token's client credentials are: files (the
// first of them set decides), or else Vault.
var (
	fileCredKeys  = []string{"client_id", "client_id_file", "client_secret_file", "private_key_file", "tls_cert_file", "tls_key_file"}
	vaultCredKeys = []string{"kv_path", "kv_mount", "kv_version", "client_id_field", "client_secret_field",
		"private_key_field", "key_id_field", "tls_cert_field", "tls_key_field", "transit_key", "transit_mount"}
)

// firstSet is the first of keys set in t, or "".
func firstSet(t table, keys []string) string {
	for _, k := range keys {
		if _, ok := t.m[k]; ok {
			return k
		}
	}
	return ""
}

// fileCreds reads a token's client credentials from files (first is the
// first file key set): the client id, and the files client_auth needs.
func (r *reader) fileCreds(t table, f *Fetch, first string) {
	for _, k := range vaultCredKeys {
		if _, ok := t.m[k]; ok {
			r.fail(t.prefix+"."+k, "set with %s: a token's client credentials come from Vault (kv_path, transit_key) or from files (client_id or client_id_file, and client_secret_file, private_key_file or tls_cert_file and tls_key_file), never both: remove one", first)
		}
	}
	f.Secret = vaultsrc.Secret{}
	fl := &f.Files
	fl.ID, fl.IDFile = t.str("client_id", ""), t.path("client_id_file", readFile)
	switch {
	case fl.ID != "" && fl.IDFile != "":
		r.fail(t.prefix+".client_id_file", "set with client_id: give the client id one way")
	case fl.ID == "" && fl.IDFile == "":
		r.fail(t.prefix+".client_id", "missing: the client id, as client_id = \"…\" (it is not a secret) or in client_id_file")
	case strings.ContainsAny(fl.ID, "\r\n"):
		r.fail(t.prefix+".client_id", "%q holds a line break", fl.ID)
	}
	need := func(key string, kind fileKind) string {
		p := t.path(key, kind)
		if p == "" {
			r.fail(t.prefix+"."+key, "missing: client_auth = %q reads the client's %s from it", f.ClientAuth, strings.ReplaceAll(strings.TrimSuffix(key, "_file"), "_", " "))
		}
		return p
	}
	const (
		forSecret = "only for client_auth = \"basic+body\", \"basic\" or \"body\""
		forJWT    = "only for client_auth = \"private_key_jwt\""
		forTLS    = "only for client_auth = \"tls_client_auth\""
	)
	switch f.ClientAuth {
	case "basic+body", "basic", "body":
		fl.SecretFile = need("client_secret_file", secretFile)
		r.onlyFor(t, forJWT, "private_key_file", "assertion_alg", "assertion_audience", "assertion_kid")
		r.onlyFor(t, forTLS, "tls_cert_file", "tls_key_file")
	case "private_key_jwt":
		fl.PrivateKeyFile = need("private_key_file", secretFile)
		fl.KeyID = t.str("assertion_kid", "")
		r.assertion(t, f)
		r.onlyFor(t, forSecret, "client_secret_file")
		r.onlyFor(t, forTLS, "tls_cert_file", "tls_key_file")
	case "tls_client_auth":
		fl.CertFile, fl.KeyFile = need("tls_cert_file", readFile), need("tls_key_file", secretFile)
		r.onlyFor(t, forSecret, "client_secret_file")
		r.onlyFor(t, forJWT, "private_key_file", "assertion_alg", "assertion_audience", "assertion_kid")
	default:
		r.fail(t.prefix+".client_auth", "unknown mode %q: want \"basic+body\", \"basic\", \"body\", \"private_key_jwt\" or \"tls_client_auth\"", f.ClientAuth)
	}
}
