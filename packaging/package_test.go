// Package packaging builds tokend's .deb and .rpm (build.sh); its test
// checks and installs them.
package packaging

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
)

// TestPackage checks the .deb and .rpm that packaging/build.sh wrote to
// $TOKEND_PACKAGES, installs the .deb on this machine, runs the installed
// units under a real systemd, and purges it again. .ci/test builds the
// packages and sets the variables.
func TestPackage(t *testing.T) {
	dir, version := os.Getenv("TOKEND_PACKAGES"), os.Getenv("TOKEND_PACKAGE_VERSION")
	if dir == "" || version == "" {
		daemontest.Need(t, "built packages", "packaging/build.sh --version V --out DIR, then TOKEND_PACKAGES=DIR TOKEND_PACKAGE_VERSION=V")
	}
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "installing a package needs root")
	}
	for _, tool := range []string{"dpkg-deb", "apt-get", "rpm", "lintian"} {
		if _, err := exec.LookPath(tool); err != nil {
			daemontest.Need(t, tool, "apt-get install dpkg rpm lintian")
		}
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "tokend_*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(dir, "tokend-*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("want exactly one .deb and one .rpm in %s: %v %v", dir, debs, rpms)
	}
	deb, rpm := debs[0], rpms[0]
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	// Metadata and contents.
	if got := run("dpkg-deb", "--showformat=${Package} ${Version} ${Architecture} ${Depends}", "-W", deb); got != "tokend "+version+"-1 amd64 systemd" {
		t.Errorf("deb metadata: %q", got)
	}
	if got := run("dpkg-deb", "-I", deb, "conffiles"); strings.TrimSpace(got) != "/etc/tokend/tokend.toml" {
		t.Errorf("conffiles: %q", got)
	}
	listing := run("dpkg-deb", "-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/tokend\n", "-rwxr-xr-x root/root .* ./usr/bin/tokenctl\n",
		"-rw-r--r-- root/root .* ./usr/lib/systemd/system/tokend.service\n", "-rw-r--r-- root/root .* ./usr/lib/systemd/system/tokend.socket\n",
		"-rw-r--r-- root/root .* ./usr/lib/sysusers.d/tokend.conf\n", "-rw-r----- root/root .* ./etc/tokend/tokend.toml\n",
		".* ./usr/share/doc/tokend/README.md\n", ".* ./usr/share/doc/tokend/copyright\n", ".* ./usr/share/doc/tokend/examples/api-call.timer\n",
		".* ./usr/share/man/man8/tokend.8.gz\n", ".* ./usr/share/man/man1/tokenctl.1.gz\n", ".* ./usr/share/man/man5/tokend.toml.5.gz\n",
	} {
		if !matchLine(listing, want) {
			t.Errorf("deb lacks %q:\n%s", want, listing)
		}
	}
	rpmList := run("rpm", "-qpl", rpm)
	for _, f := range []string{"/usr/bin/tokend", "/usr/bin/tokenctl", "/usr/lib/systemd/system/tokend.service", "/usr/lib/systemd/system/tokend.socket",
		"/usr/lib/sysusers.d/tokend.conf", "/etc/tokend/tokend.toml", "/usr/share/doc/tokend/README.md"} {
		if !strings.Contains(rpmList, f+"\n") {
			t.Errorf("rpm lacks %s:\n%s", f, rpmList)
		}
	}
	if got := run("rpm", "-qp", "--queryformat", "%{NAME} %{VERSION} %{ARCH}", rpm); got != "tokend "+version+" x86_64" {
		t.Errorf("rpm metadata: %q", got)
	}
	if got := run("rpm", "-qp", "--configfiles", rpm); strings.TrimSpace(got) != "/etc/tokend/tokend.toml" {
		t.Errorf("rpm config files: %q", got)
	}
	// The .rpm installs into a scratch root: there is no dnf here, so its
	// dependency on systemd is not resolved (--nodeps) and its scriptlets,
	// the same scripts the .deb runs on this machine below, are checked as
	// text only.
	scripts := run("rpm", "-qp", "--scripts", rpm)
	for _, want := range []string{"postinstall scriptlet", "tokend postinst", "preuninstall scriptlet", "tokend prerm", "postuninstall scriptlet", "tokend postrm"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm scriptlets lack %q:\n%s", want, scripts)
		}
	}
	root := t.TempDir()
	run("rpm", "--root", root, "--initdb")
	run("rpm", "--root", root, "-i", "--nodeps", "--noscripts", rpm)
	for path, mode := range map[string]os.FileMode{"/usr/bin/tokend": 0o755, "/usr/bin/tokenctl": 0o755, "/etc/tokend/tokend.toml": 0o640,
		"/usr/lib/systemd/system/tokend.socket": 0o644, "/usr/lib/sysusers.d/tokend.conf": 0o644} {
		if fi, err := os.Stat(filepath.Join(root, path)); err != nil {
			t.Errorf("rpm-installed %s: %v", path, err)
		} else if fi.Mode() != mode {
			t.Errorf("rpm-installed %s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}
	if got := run(filepath.Join(root, "usr/bin/tokend"), "version"); !strings.HasPrefix(got, "tokend "+version+" (commit ") {
		t.Errorf("rpm-installed tokend version: %q", got)
	}
	run("rpm", "--root", root, "-V", "--nodeps", "tokend")
	run("rpm", "--root", root, "-e", "--nodeps", "--noscripts", "tokend")
	if _, err := os.Stat(filepath.Join(root, "usr/bin/tokend")); !os.IsNotExist(err) {
		t.Errorf("rpm -e left /usr/bin/tokend: %v", err)
	}

	if out, err := exec.Command("lintian", "--fail-on", "error,warning", deb).CombinedOutput(); err != nil {
		t.Errorf("lintian: %v\n%s", err, out)
	}

	// Install on this machine.
	abs, _ := filepath.Abs(deb)
	t.Cleanup(func() { exec.Command("apt-get", "purge", "-y", "tokend").Run() })
	run("apt-get", "install", "-y", "--no-install-recommends", abs)
	u, err := user.Lookup("tokend")
	if err != nil {
		t.Fatalf("user tokend: %v", err)
	}
	if _, err := user.LookupGroup("tokend-clients"); err != nil {
		t.Errorf("group tokend-clients: %v", err)
	}
	gid, _ := strconv.Atoi(u.Gid)
	for path, mode := range map[string]os.FileMode{"/etc/tokend": 0o750 | os.ModeDir, "/etc/tokend/tokend.toml": 0o640} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode() != mode || st.Uid != 0 || int(st.Gid) != gid {
			t.Errorf("%s: mode %v uid %d gid %d, want %v root:tokend", path, fi.Mode(), st.Uid, st.Gid, mode)
		}
	}
	if fi, err := os.Stat("/usr/bin/tokend"); err != nil || fi.Mode() != 0o755 {
		t.Errorf("/usr/bin/tokend: %v %v", fi, err)
	}
	if got := run("/usr/bin/tokend", "version"); !strings.HasPrefix(got, "tokend "+version+" (commit ") || strings.Contains(got, "commit unknown") {
		t.Errorf("tokend version: %q", got)
	}
	// The shipped example, as a newcomer checks it before editing: it
	// names the one file the operator must provide, then passes, noting
	// the credential systemd hands over at start.
	out, err := exec.Command("/usr/bin/tokend", "check").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), `vault.role_id_file: "/etc/tokend/vault-role-id" does not exist`) {
		t.Errorf("tokend check of the example before the Vault files exist: %v\n%s", err, out)
	}
	os.WriteFile("/etc/tokend/vault-role-id", []byte("role"), 0o640)
	os.Chown("/etc/tokend/vault-role-id", 0, gid)
	out, err = exec.Command("/usr/bin/tokend", "check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "/etc/tokend/tokend.toml: ok") || !strings.Contains(string(out), `note: vault.secret_id_file: "${CREDENTIALS_DIRECTORY}/vault-secret-id" not checked`) {
		t.Errorf("tokend check of the example with its role-id: %v\n%s", err, out)
	}
	if _, err := os.Lstat("/etc/systemd/system/sockets.target.wants/tokend.socket"); err != nil {
		t.Errorf("tokend.socket not enabled: %v", err)
	}

	// The installed units and binary under a real systemd, with non-root
	// clients on and off the allow lists, after start and restart.
	t.Run("systemd", func(t *testing.T) {
		daemontest.HostUsers(t)
		ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
		cfg := daemontest.ClientsConfig(daemontest.VaultStandIn(t, "cid", "csecret"), "/srv/vault-token", ep.TokenURL())
		svc, _ := os.ReadFile("/usr/lib/systemd/system/tokend.service")
		sock, _ := os.ReadFile("/usr/lib/systemd/system/tokend.socket")
		s := daemontest.BootSystemd(t, map[string]string{
			"tokend.service":             string(svc),
			"tokend.socket":              string(sock),
			"tokend.service.d/test.conf": "[Service]\nExecStart=\nExecStart=/usr/bin/tokend --config /srv/tokend.toml\n",
		}, map[string][]byte{"tokend.toml": []byte(cfg.TOML()), "vault-token": []byte("test-token")})
		s.Must("start", "tokend.socket")
		out, err := exec.Command("nsenter", "-t", s.PID, "-m", "-p", "--", "/usr/bin/tokenctl", "get").CombinedOutput()
		if err != nil || !ep.IssuedSince(0, strings.TrimSpace(string(out))) {
			t.Errorf("installed tokenctl get as root, through activation: %v %q", err, out)
		}
		if st := s.Must("show", "tokend.service", "-p", "ActiveState", "--value"); st != "active" {
			t.Errorf("tokend.service %s", st)
		}
		issued := func(tok string) bool { return ep.IssuedSince(0, tok) }
		s.CheckClients(t, "installed, after activation", "/usr/bin/tokenctl", issued)
		s.Must("stop", "tokend.service")
		s.Must("start", "tokend.service")
		s.CheckClients(t, "installed, after systemctl start tokend.service", "/usr/bin/tokenctl", issued)
		s.Must("restart", "tokend.service")
		s.CheckClients(t, "installed, after restart", "/usr/bin/tokenctl", issued)

		// An upgrade while the token endpoint is down: the new tokend cannot
		// be ready (no token), and the maintainer script must not wait for
		// it. dpkg runs "postinst configure OLDVERSION" on an upgrade.
		ep.FailAll(daemontest.Fault{Status: 503, Body: `{"error":"temporarily_unavailable"}`})
		before := ep.IssuedCount()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		began := time.Now()
		postinst := exec.CommandContext(ctx, "nsenter", "-t", s.PID, "-m", "-p", "--",
			"/var/lib/dpkg/info/tokend.postinst", "configure", "0.0.9")
		// A blocked systemctl holds the output pipe after nsenter is
		// killed: give up on it, so that the test fails rather than hangs.
		postinst.WaitDelay = 5 * time.Second
		out, err = postinst.CombinedOutput()
		took := time.Since(began)
		t.Logf("postinst configure 0.0.9 with the token endpoint down took %v", took.Round(time.Millisecond))
		if err != nil || took > 20*time.Second {
			t.Fatalf("postinst configure (an upgrade) with the token endpoint down: %v after %v, want done at once\n%s", err, took, out)
		}
		daemontest.WaitFor(t, "the upgrade's restart to begin (a new tokend, no token yet)", 20*time.Second, func() bool {
			return s.Must("show", "tokend.service", "-p", "ActiveState", "--value") == "activating"
		})
		ep.ClearFaults()
		daemontest.WaitFor(t, "the new tokend to be ready once the endpoint is back", 90*time.Second, func() bool {
			return s.Must("show", "tokend.service", "-p", "ActiveState", "--value") == "active"
		})
		newer := func(tok string) bool { return ep.IssuedSince(before, tok) }
		s.CheckClients(t, "installed, after an upgrade during an outage", "/usr/bin/tokenctl", newer)
	})

	// Remove and purge.
	run("apt-get", "purge", "-y", "tokend")
	for _, gone := range []string{"/usr/bin/tokend", "/usr/bin/tokenctl", "/etc/tokend", "/usr/lib/systemd/system/tokend.socket", "/etc/systemd/system/sockets.target.wants/tokend.socket"} {
		if _, err := os.Lstat(gone); !os.IsNotExist(err) {
			t.Errorf("%s left after purge: %v", gone, err)
		}
	}
}

// matchLine reports whether some line of text matches pattern, where ".*"
// stands for any run of characters.
func matchLine(text, pattern string) bool {
	parts := strings.Split(strings.TrimSuffix(pattern, "\n"), ".*")
	for _, line := range strings.Split(text, "\n") {
		rest, ok := line, true
		for i, p := range parts {
			j := strings.Index(rest, p)
			if j < 0 || (i == 0 && j != 0) {
				ok = false
				break
			}
			rest = rest[j+len(p):]
		}
		if ok && rest == "" {
			return true
		}
	}
	return false
}
