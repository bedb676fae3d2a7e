package config

import (
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tokend/tokend/vaultsrc"
)

// A [token.NAME] table: how the token is obtained, who may read it, and
// where else it is kept.

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
		MinRemaining:   t.dur("min_remaining", DefaultMinRemaining),
		RetryMax:       t.dur("retry_max", DefaultRetryMax),
		RequestTimeout: t.dur("request_timeout", DefaultRequestTimeout),
		MaxPerHour:     t.int("max_fetches_per_hour", defaultMaxPerHour),
	}}
	if tc.MaxPerHour < 1 || tc.MaxPerHour > 100000 {
		r.fail(prefix+".max_fetches_per_hour", "%d is out of range 1..100000", tc.MaxPerHour)
	}
	r.endpoint(t, &tc.Fetch)
	if first := firstSet(t, fileCredKeys); first != "" {
		r.fileCreds(t, &tc.Fetch, first)
	} else {
		r.clientAuth(t, &tc.Fetch)
		r.secret(prefix, &tc.Fetch)
	}
	r.checkDurations(prefix, tc.Fetch)
	r.share(t, &tc.Fetch)
	r.dpop(t, &tc.Fetch)
	tc.Params = r.params(t, t.m)
	tc.Access = r.access(t)
	tc.File = r.file(t, t.m)
	return tc
}

// endpoint reads where the token is asked for, and how it is reached.
func (r *reader) endpoint(t table, f *Fetch) {
	prefix := t.prefix
	f.InsecureHTTP = t.bool("allow_insecure_http", false)
	f.CAFile, f.CAOnly = t.path("ca_file", readFile), t.bool("ca_only", false)
	if f.CAFile != "" {
		if _, err := CAPool(f.CAFile, true); err != nil {
			r.fail(prefix+".ca_file", "%v", err)
		}
	} else if f.CAOnly {
		r.fail(prefix+".ca_only", "set without ca_file")
	}
	switch {
	case f.TokenURL == "" && f.Issuer == "":
		r.fail(prefix+".token_url", "missing: the token endpoint, e.g. \"https://api.example.com/oauth2/token\" (or issuer, to discover it)")
	case f.TokenURL != "" && f.Issuer != "":
		r.fail(prefix+".issuer", "set with token_url: give one of them")
	case f.Issuer != "":
		if u := r.checkURL(prefix+".issuer", "", f.Issuer, f.InsecureHTTP); u != nil && (u.User != nil || u.RawQuery != "" || u.Fragment != "") {
			r.fail(prefix+".issuer", "must be a URL without credentials, query or fragment")
		}
	default:
		if u := r.checkURL(prefix+".token_url", "", f.TokenURL, f.InsecureHTTP); u != nil && u.User != nil {
			r.fail(prefix+".token_url", "must not carry credentials; they come from Vault or client_secret_file")
		}
	}
}

// onlyFor refuses each of keys that is set, saying what it is for.
func (r *reader) onlyFor(t table, why string, keys ...string) {
	for _, k := range keys {
		if _, ok := t.m[k]; ok {
			r.fail(t.prefix+"."+k, "%s", why)
		}
	}
}

// clientAuth reads how the client authenticates, and the fields of the
// KV secret that mode reads.
func (r *reader) clientAuth(t table, f *Fetch) {
	switch f.ClientAuth {
	case "basic+body", "basic", "body":
		r.onlyFor(t, "only for client_auth = \"private_key_jwt\"", "private_key_field", "key_id_field", "assertion_alg", "assertion_audience", "transit_mount", "transit_key", "assertion_kid")
		r.onlyFor(t, "only for client_auth = \"tls_client_auth\"", "tls_cert_field", "tls_key_field")
	case "tls_client_auth":
		r.onlyFor(t, "not used with tls_client_auth: tls_cert_field and tls_key_field name the certificate's fields", "client_secret_field")
		f.Secret.CertField = t.str("tls_cert_field", "tls_cert")
		f.Secret.SecretField = t.str("tls_key_field", "tls_key")
	case "private_key_jwt":
		r.privateKeyJWT(t, f)
	default:
		r.fail(t.prefix+".client_auth", "unknown mode %q: want \"basic+body\", \"basic\", \"body\", \"private_key_jwt\" or \"tls_client_auth\"", f.ClientAuth)
	}
}

// privateKeyJWT reads private_key_jwt's keys: the key in KV, or in Vault
// Transit.
func (r *reader) privateKeyJWT(t table, f *Fetch) {
	r.onlyFor(t, "not used with private_key_jwt: private_key_field names the key's field", "client_secret_field")
	f.Secret.SecretField = t.str("private_key_field", "private_key")
	f.Secret.KeyIDField = t.str("key_id_field", "")
	if f.TransitKey = t.str("transit_key", ""); f.TransitKey != "" {
		// The key stays in Vault: the KV secret holds the client id only.
		r.onlyFor(t, "set with transit_key: the key is in Vault Transit, not in KV", "private_key_field", "key_id_field")
		f.Secret.SecretField, f.Secret.KeyIDField = "", ""
		f.TransitMount = strings.Trim(t.str("transit_mount", "transit"), "/")
		f.AssertionKID = t.str("assertion_kid", "")
	} else {
		r.onlyFor(t, "only with transit_key", "transit_mount", "assertion_kid")
	}
	r.assertion(t, f)
}

// assertion reads the client assertion's alg and audience
// (private_key_jwt).
func (r *reader) assertion(t table, f *Fetch) {
	f.AssertionAlg = t.str("assertion_alg", "")
	f.AssertionAudience = t.str("assertion_audience", "")
	if a := f.AssertionAlg; a != "" && a != "RS256" && a != "PS256" {
		r.fail(t.prefix+".assertion_alg", "%q: want \"RS256\" or \"PS256\" (for RSA keys; EC and Ed25519 keys decide their own)", a)
	}
}

// secret checks where in Vault's KV the client credentials are.
func (r *reader) secret(prefix string, f *Fetch) {
	if f.Secret.Mount == "" {
		r.fail(prefix+".kv_mount", "must not be empty")
	}
	if f.Secret.Path == "" {
		r.fail(prefix+".kv_path", "missing: the secret's path under kv_mount, e.g. \"tokend/vibes\"")
	}
	if v := f.Secret.Version; v != 1 && v != 2 {
		r.fail(prefix+".kv_version", "%d: want 1 or 2", v)
	} else if f.Secret.Path != "" && f.Secret.Mount != "" {
		r.checkKVPath(prefix, f.Secret)
	}
	for _, fl := range []struct{ key, val string }{{"client_id_field", f.Secret.IDField}, {"client_secret_field", f.Secret.SecretField}} {
		if fl.val == "" && !(fl.key == "client_secret_field" && f.TransitKey != "") {
			r.fail(prefix+"."+fl.key, "must not be empty")
		}
	}
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
	// The same holds for the members of a group other than tokend's own.
	if fi, err := r.host.stat(filepath.Dir(path)); err == nil {
		perm, gid := fi.Mode().Perm(), uint32(os.Getegid())
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			gid = st.Gid
		}
		switch {
		case perm&0o002 != 0:
			r.fail(t.prefix+".file", "its directory %q is writable by others (mode %04o): use a directory only tokend can write, such as RuntimeDirectory=tokend-files", filepath.Dir(path), perm)
		case perm&0o020 != 0 && !serviceGroup(gid):
			r.fail(t.prefix+".file", "its directory %q is writable by group %d (mode %04o), whose members could replace the token file: use a directory only tokend can write (chmod g-w, or RuntimeDirectory=tokend-files)", filepath.Dir(path), gid, perm)
		}
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
