package config

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CheckOptions are what Check needs to know beyond the file.
type CheckOptions struct {
	// BeforeStart says the check runs outside the service, as `tokend
	// check` does from a shell: ${CREDENTIALS_DIRECTORY} is then unset
	// (systemd sets it only for the running service), so paths under it
	// are taken from CredentialsDir, or left unchecked with a note.
	BeforeStart    bool
	CredentialsDir string
	// ServiceUser is the user the service runs as, whose access to the
	// files the configuration names is checked; "" means this process.
	ServiceUser string
	// Unit is the systemd service whose settings matter to the
	// configuration (PrivateUsers=); "" to not ask systemd.
	Unit string
	// Activated says the socket comes from systemd, whose business its
	// directory then is.
	Activated bool
}

// Report is what Check found that tokend can run with.
type Report struct {
	Warnings []string // mistakes to fix: each names its key
	Notes    []string // what was not checked, and why
}

// Check reads and validates a configuration file. It is the one
// validation: `tokend serve` runs it at start and at every reload, and
// `tokend check` runs it with BeforeStart. A configuration it refuses is
// returned as *ConfigError, every problem naming its key (and line).
func Check(path string, opts CheckOptions) (*Config, Report, error) {
	var rep Report
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, rep, &ConfigError{File: path, Problems: []string{readProblem(err)}}
	}
	creds := credentialsDir{flag: opts.CredentialsDir, deferred: opts.BeforeStart && opts.CredentialsDir == ""}
	cfg, r, err := parse(path, data, thisHost(), creds)
	if err != nil {
		return nil, rep, err
	}
	var problems []string
	svc, err := serviceUser(opts.ServiceUser)
	if err != nil {
		rep.Notes = append(rep.Notes, err.Error())
	}
	for _, f := range r.files {
		if f.deferred {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %q not checked: systemd sets ${CREDENTIALS_DIRECTORY} only when tokend starts; give --credentials-dir DIR (the directory LoadCredential= copies from) to check it", f.key, f.path))
			continue
		}
		if p := fileProblem(f, svc); p != "" {
			problems = append(problems, p)
		}
	}
	if err := checkIDMaps(cfg, IDMapProblem(os.ReadFile)); err != nil {
		problems = append(problems, err.Error())
	} else if opts.Unit != "" && privateUsers(opts.Unit) {
		if err := checkIDMaps(cfg, opts.Unit+" has PrivateUsers=yes"); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return nil, rep, &ConfigError{File: path, Problems: problems}
	}
	rep.Warnings = append(r.warnings, Warnings(path, cfg, opts.Activated)...)
	if !opts.Activated {
		if dir := filepath.Dir(cfg.Socket); !exists(dir) {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("socket: directory %q does not exist: under systemd, tokend.socket makes it; tokend started without socket activation needs it made first (install -d -m 0755 %s)", dir, dir))
		}
	}
	return cfg, rep, nil
}

// readProblem words an error reading the configuration file itself.
func readProblem(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%v: the package installs /etc/tokend/tokend.toml; give another with --config FILE", err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("%v: the file is root:tokend 0640; run as root, or as a member of group tokend", err)
	}
	return err.Error()
}

// account is a user whose access to a file is checked.
type account struct {
	name string
	uid  uint32
	gids []uint32
}

// serviceUser looks up the user the service runs as; nil means this
// process (whose access is tried, not computed). It is nil also when
// this process is not root: only root may read what the user could.
func serviceUser(name string) (*account, error) {
	if name == "" || os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q does not exist (the package creates it): the files were tried as this user instead", name)
	}
	a := &account{name: name}
	n, _ := strconv.ParseUint(u.Uid, 10, 32)
	a.uid = uint32(n)
	ids, _ := u.GroupIds()
	for _, g := range append(ids, u.Gid) {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			a.gids = append(a.gids, uint32(n))
		}
	}
	return a, nil
}

// fileProblem says why the service could not read the file f names, or "".
func fileProblem(f fileKey, svc *account) string {
	fi, err := os.Stat(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && f.credential:
		return fmt.Sprintf("%s: %q does not exist: LoadCredential= (or LoadCredentialEncrypted=) in tokend.service puts it there; check the credential's name and source", f.key, f.path)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%s: %q does not exist", f.key, f.path)
	case err != nil:
		return fmt.Sprintf("%s: %v", f.key, err)
	case fi.IsDir():
		return fmt.Sprintf("%s: %q is a directory, not a file", f.key, f.path)
	}
	// systemd copies credentials readable by the service, whatever the
	// source's owner: only this process's access to the source matters.
	if svc == nil || f.credential {
		file, err := os.Open(f.path)
		if err != nil {
			return fmt.Sprintf("%s: %q is not readable: %v", f.key, f.path, errors.Unwrap(err))
		}
		file.Close()
		return ""
	}
	st := fi.Sys().(*syscall.Stat_t)
	mode := fi.Mode().Perm()
	var ok bool
	switch {
	case st.Uid == svc.uid:
		ok = mode&0o400 != 0
	case slices.Contains(svc.gids, st.Gid):
		ok = mode&0o040 != 0
	default:
		ok = mode&0o004 != 0
	}
	if ok && dirsSearchable(filepath.Dir(f.path), svc) {
		return ""
	}
	if !ok {
		return fmt.Sprintf("%s: %q cannot be read by the service user %s (owner uid %d, group %d, mode %04o): chgrp %s %s && chmod g+r %s, or use LoadCredential=",
			f.key, f.path, svc.name, st.Uid, st.Gid, mode, svc.name, f.path, f.path)
	}
	return fmt.Sprintf("%s: %q is in a directory the service user %s cannot enter: give it search permission (chmod o+x or g+x on each directory above)", f.key, f.path, svc.name)
}

// dirsSearchable reports whether a may enter dir and every directory above it.
func dirsSearchable(dir string, a *account) bool {
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return false
		}
		st := fi.Sys().(*syscall.Stat_t)
		mode := fi.Mode().Perm()
		var bit os.FileMode = 0o001
		switch {
		case st.Uid == a.uid:
			bit = 0o100
		case slices.Contains(a.gids, st.Gid):
			bit = 0o010
		}
		if mode&bit == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// privateUsers asks systemd whether unit runs in a private user
// namespace. No systemd, no such unit, or no answer in time: false.
func privateUsers(unit string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemctl", "show", unit, "-p", "PrivateUsers", "--value").Output()
	return err == nil && strings.TrimSpace(string(out)) == "yes"
}
