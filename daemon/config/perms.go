package config

import (
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// Warnings lists the operator mistakes that sshd's StrictModes would catch:
// files that decide where secrets and tokens go, or hold a credential, that someone other than root or tokend could change (or,
// for credentials, read); a socket directory others could write (they
// could swap the socket) or a file sink's directory owned by someone else;
// a socket_mode that lets every local user in.
// tokend logs them at start and reload, and `tokend check` prints them.
// activated says the socket comes from systemd, so its directory is
// systemd's business.
func Warnings(path string, cfg *Config, activated bool) []string {
	trusted := trustedOwners()
	var out []string
	file := func(key, p string, secret bool) {
		if p == "" {
			return
		}
		fi, err := os.Stat(p)
		if err != nil {
			return // reported by whatever reads it
		}
		st := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		switch {
		case mode&0o022 != 0:
			out = append(out, fmt.Sprintf("%s %q is writable by group or others (mode %04o): chmod go-w it", key, p, mode))
		case secret && mode&0o004 != 0:
			out = append(out, fmt.Sprintf("%s %q is readable by others (mode %04o): it holds a credential; chmod o-r it", key, p, mode))
		}
		if !trusted[st.Uid] {
			out = append(out, fmt.Sprintf("%s %q is owned by uid %d, not root or tokend: chown root it", key, p, st.Uid))
		}
	}
	file("config", path, false)
	file("vault.token_file", cfg.Vault.TokenFile, true)
	file("vault.role_id_file", cfg.Vault.RoleIDFile, false)
	file("vault.secret_id_file", cfg.Vault.SecretIDFile, true)
	file("vault.key_file", cfg.Vault.KeyFile, true)
	file("vault.jwt_file", cfg.Vault.JWTFile, true)
	file("vault.cert_file", cfg.Vault.CertFile, false)
	for _, name := range slices.Sorted(maps.Keys(cfg.Tokens)) {
		fl, key := cfg.Tokens[name].Files, "token."+name+"."
		file(key+"client_id_file", fl.IDFile, false)
		file(key+"client_secret_file", fl.SecretFile, true)
		file(key+"private_key_file", fl.PrivateKeyFile, true)
		file(key+"tls_cert_file", fl.CertFile, false)
		file(key+"tls_key_file", fl.KeyFile, true)
		if f := cfg.Tokens[name].File; f != nil {
			dir := filepath.Dir(f.Path)
			if fi, err := os.Stat(dir); err == nil && !trusted[fi.Sys().(*syscall.Stat_t).Uid] {
				out = append(out, fmt.Sprintf("token.%s.file: directory %q is owned by uid %d, not root or tokend: that user could replace the token file", name, dir, fi.Sys().(*syscall.Stat_t).Uid))
			}
		}
	}
	if !activated {
		dir := filepath.Dir(cfg.Socket)
		if fi, err := os.Stat(dir); err == nil {
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode().Perm()&0o002 != 0 {
				out = append(out, fmt.Sprintf("socket directory %q is writable by others (mode %04o): anyone could replace the socket; use a directory of root's or tokend's", dir, fi.Mode().Perm()))
			}
			if !trusted[st.Uid] {
				out = append(out, fmt.Sprintf("socket directory %q is owned by uid %d, not root or tokend", dir, st.Uid))
			}
		}
		if cfg.SocketMode&0o007 != 0 {
			out = append(out, fmt.Sprintf("socket_mode %04o lets every local user connect; use \"0660\" with socket_group, and allow lists", cfg.SocketMode))
		}
	}
	return out
}

// trustedOwners are root, the user tokend runs as, and the user "tokend".
func trustedOwners() map[uint32]bool {
	t := map[uint32]bool{0: true, uint32(os.Geteuid()): true}
	if u, err := user.Lookup("tokend"); err == nil {
		if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			t[uint32(n)] = true
		}
	}
	return t
}

// serviceGroup reports whether gid is tokend's own group: this process's,
// or user tokend's primary group. Its members are tokend.
func serviceGroup(gid uint32) bool {
	if gid == uint32(os.Getegid()) {
		return true
	}
	u, err := user.Lookup("tokend")
	return err == nil && u.Gid == strconv.FormatUint(uint64(gid), 10)
}
