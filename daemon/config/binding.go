package config

import (
	"cmp"
	"strings"
)

// What binds a token beyond its request: DPoP's key (dpop), and the
// other hosts it is shared with (share_path).

// dpop reads dpop and dpop_alg.
func (r *reader) dpop(t table, f *Fetch) {
	f.DPoP = t.bool("dpop", false)
	f.DPoPAlg = t.str("dpop_alg", "")
	switch {
	case f.DPoPAlg != "" && !f.DPoP:
		r.fail(t.prefix+".dpop_alg", "set without dpop = true")
	case f.DPoPAlg != "" && f.DPoPAlg != "ES256" && f.DPoPAlg != "EdDSA" && f.DPoPAlg != "RS256":
		r.fail(t.prefix+".dpop_alg", "%q: want \"ES256\" (the default), \"EdDSA\" or \"RS256\"", f.DPoPAlg)
	case f.DPoP && f.SharePath != "":
		r.fail(t.prefix+".dpop", "set with share_path: a DPoP token is bound to this host's own key, which other hosts cannot use; drop one of them")
	}
	if f.DPoP && f.DPoPAlg == "" {
		f.DPoPAlg = "ES256"
	}
	if _, sink := t.m["file"]; f.DPoP && sink {
		r.warn(t.prefix+".file", "the token is DPoP-bound: whoever reads the file also needs a fresh proof for each request (PROOF, or tokenctl header --method --url), or can call the API through a [proxy.NAME]")
	}
}

// share reads share_path and share_mount.
func (r *reader) share(t table, f *Fetch) {
	prefix := t.prefix
	f.SharePath = strings.Trim(t.str("share_path", ""), "/")
	f.ShareMount = strings.Trim(t.str("share_mount", cmp.Or(f.Secret.Mount, "secret")), "/")
	switch _, mount := t.m["share_mount"]; {
	case f.SharePath == "" && mount:
		r.fail(prefix+".share_mount", "set without share_path")
	case f.SharePath != "" && f.ShareMount == "":
		r.fail(prefix+".share_mount", "must not be empty")
	case f.SharePath != "" && !mount && f.Secret.Path != "" && f.Secret.Version != 2:
		r.fail(prefix+".share_path", "needs a KV v2 mount (check-and-set writes), and kv_mount %q is KV v1: set share_mount", f.Secret.Mount)
	case f.SharePath != "" && f.ShareMount == f.Secret.Mount && f.SharePath == f.Secret.Path:
		r.fail(prefix+".share_path", "%q is the client secret's own path: the shared token needs an entry of its own", f.SharePath)
	}
}
