package daemontest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	staticOnce sync.Once
	staticDir  string
	staticErr  error
)

// StaticBinaries builds tokend and tokenctl as the packages do (static, no
// race detector), to run inside a hardened unit.
func StaticBinaries(t *testing.T) string {
	staticOnce.Do(func() {
		staticDir, staticErr = os.MkdirTemp("", "tokend-static-")
		if staticErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", staticDir, Root("cmd/tokend"), Root("cmd/tokenctl"))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			staticErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if staticErr != nil {
		t.Fatal(staticErr)
	}
	return staticDir
}

// SystemdNS is a real systemd running as PID 1 in fresh namespaces.
type SystemdNS struct {
	t       *testing.T
	Dir, cg string
	PID     string
}

func (s *SystemdNS) Ctl(args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"-t", s.PID, "-m", "-p", "--", "systemctl", "--no-pager"}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (s *SystemdNS) Must(args ...string) string {
	s.t.Helper()
	out, err := s.Ctl(args...)
	if err != nil {
		s.t.Fatalf("systemctl %s: %v\n%s\nconsole:\n%s", strings.Join(args, " "), err, out, s.Console())
	}
	return out
}

func (s *SystemdNS) Console() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "console.log"))
	return string(b)
}

// ConsoleShows waits up to 5s for text on the console: a unit's output
// reaches it a moment after systemctl start returns.
func (s *SystemdNS) ConsoleShows(text string) bool {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if strings.Contains(s.Console(), text) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// Sock is tokend's socket inside the namespaces, as the host reaches it.
func (s *SystemdNS) Sock() string { return "/proc/" + s.PID + "/root/run/tokend/tokend.sock" }

func BootSystemd(t *testing.T, units map[string]string, srv map[string][]byte) *SystemdNS {
	t.Helper()
	if os.Getuid() != 0 {
		Need(t, "root", "booting systemd in namespaces needs root")
	}
	for _, tool := range []string{"/usr/lib/systemd/systemd", "unshare", "nsenter", "script", "systemd-sysusers"} {
		if _, err := exec.LookPath(tool); err != nil {
			Need(t, tool, "apt-get install systemd util-linux bsdutils")
		}
	}
	dir, err := os.MkdirTemp("", "tokend-sd-")
	if err != nil {
		t.Fatal(err)
	}
	s := &SystemdNS{t: t, Dir: dir}
	cgroot := "/sys/fs/cgroup"
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil {
		cgroot = "/sys/fs/cgroup/unified" // hybrid layout
	}
	s.cg = filepath.Join(cgroot, filepath.Base(dir))
	for _, d := range []string{"units", "srv", "empty"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	for _, f := range []string{"boot.sh", "start.sh", "stop.sh"} {
		data, err := os.ReadFile(Root("daemon/testdata/systemd-ns", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), data, 0o755)
	}
	for name, text := range units {
		p := filepath.Join(dir, "units", name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(text), 0o644)
	}
	for name, data := range srv {
		mode := os.FileMode(0o644)
		if name == "tokend" || name == "tokenctl" {
			mode = 0o755
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dir, "srv", name)), 0o755)
		os.WriteFile(filepath.Join(dir, "srv", name), data, mode)
	}
	out, err := exec.Command(filepath.Join(dir, "start.sh"), dir, s.cg).CombinedOutput()
	if err != nil {
		t.Fatalf("booting systemd: %v\n%s", err, out)
	}
	s.PID = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console:\n%s", s.Console())
		}
		exec.Command(filepath.Join(dir, "stop.sh"), dir, s.cg).Run()
		os.RemoveAll(dir)
	})
	return s
}

// Shipped creates tokend's user and group as the packages do, and returns
// a reader for unit files and the static binaries' contents.
func Shipped(t *testing.T) (read func(path string) string, tokend, tokenctl []byte) {
	t.Helper()
	bin := StaticBinaries(t)
	sysusers := Root("packaging/sysusers.d/tokend.conf")
	if out, err := exec.Command("systemd-sysusers", sysusers).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v %s", err, out)
	}
	read = func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tokend, _ = os.ReadFile(filepath.Join(bin, "tokend"))
	tokenctl, _ = os.ReadFile(filepath.Join(bin, "tokenctl"))
	return read, tokend, tokenctl
}

func SHA(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:16]
}

// The users a real host has: non-root members of tokend-clients on and off
// a token's allow list, a member of an allowed group, and someone outside
// the socket's group. They are created on the host (the systemd-ns
// harness shares its /etc) and removed when the test ends.
// The users' names end in this process's id: test binaries of several
// packages run at once, and each makes and removes its own.
var (
	testUsers   = strconv.Itoa(os.Getpid())
	userListed  = "tokend-t-ann" + testUsers // tokend-clients, on vibes' allow_users
	userMember  = "tokend-t-bob" + testUsers // tokend-clients, on no list
	userTeam    = "tokend-t-cat" + testUsers // tokend-clients and groupTeam (team's allow_groups)
	userOutside = "tokend-t-eve" + testUsers // not in tokend-clients
	groupTeam   = "tokend-t-team" + testUsers
)

// UserListed is the client on vibes' allow list (see ClientsConfig);
// UserMember is in tokend-clients but on no list.
func UserListed() string { return userListed }
func UserMember() string { return userMember }

// removeStaleUsers removes the test users and groups that a killed test
// run left behind: those whose process is gone.
func removeStaleUsers() {
	for _, db := range []struct{ file, del string }{{"/etc/passwd", "userdel"}, {"/etc/group", "groupdel"}} {
		b, _ := os.ReadFile(db.file)
		for _, line := range strings.Split(string(b), "\n") {
			name, _, _ := strings.Cut(line, ":")
			if !strings.HasPrefix(name, "tokend-t-") {
				continue
			}
			pid := strings.TrimLeft(strings.TrimPrefix(name, "tokend-t-"), "abcdefghijklmnopqrstuvwxyz-")
			if _, err := os.Stat("/proc/" + pid); pid == "" || err != nil {
				exec.Command(db.del, name).Run()
			}
		}
	}
}

// HostUsers creates the client users; tokend-clients must exist already.
func HostUsers(t *testing.T) {
	t.Helper()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	del := func() {
		for _, u := range []string{userListed, userMember, userTeam, userOutside} {
			exec.Command("userdel", u).Run()
		}
		exec.Command("groupdel", groupTeam).Run()
	}
	removeStaleUsers()
	t.Cleanup(del)
	run("groupadd", "--system", groupTeam)
	add := func(name, groups string) {
		args := []string{"useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin"}
		if groups != "" {
			args = append(args, "--groups", groups)
		}
		run(append(args, name)...)
	}
	add(userListed, "tokend-clients")
	add(userMember, "tokend-clients")
	add(userTeam, "tokend-clients,"+groupTeam)
	add(userOutside, "")
}

// ClientsConfig is two tokens from the stand-ins: vibes for allow_users,
// team for allow_groups.
func ClientsConfig(vaultAddr, tokenFile, tokenURL string) Config {
	return Config{
		Socket:       "/run/tokend/tokend.sock",
		DefaultToken: "vibes",
		Vault:        VaultConfig{Address: vaultAddr, TokenFile: tokenFile},
		Token: map[string]*TokenConfig{
			"vibes": {TokenURL: tokenURL, Scope: Scope, KVPath: "tokend/vibes", RetryMax: "1s", AllowUsers: []string{userListed}},
			"team":  {TokenURL: tokenURL, Scope: Scope, KVPath: "tokend/team", RetryMax: "1s", AllowGroups: []string{groupTeam}},
		},
	}
}

// CtlAs runs tokenctl inside the namespaces as a user with its groups
// (RunAs), on the token socket.
func (s *SystemdNS) CtlAs(name, tokenctl string, args ...string) (out string, code int) {
	s.t.Helper()
	return s.RunAs(name, append([]string{tokenctl, "--socket", "/run/tokend/tokend.sock"}, args...)...)
}

// RunAs runs a command inside the namespaces as a user with its groups,
// the way a login shell or a unit with User= would.
func (s *SystemdNS) RunAs(name string, args ...string) (out string, code int) {
	s.t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append([]string{"-t", s.PID, "-m", "-p", "--",
		"setpriv", "--reuid=" + u.Uid, "--regid=" + u.Gid, "--init-groups"}, args...)...)
	b, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	return strings.TrimSpace(string(b)), code
}

// CheckClients is the access matrix, as non-root clients see it.
func (s *SystemdNS) CheckClients(t *testing.T, when, tokenctl string, issued func(string) bool) {
	t.Helper()
	for _, c := range []struct {
		user, token string
		code        int
		want        string // in the output; "" means a token issued by the endpoint
	}{
		{userListed, "vibes", 0, ""},
		{userListed, "team", 1, "denied"},
		{userMember, "vibes", 1, "denied"},
		{userMember, "team", 1, "denied"},
		{userTeam, "team", 0, ""},
		{userTeam, "vibes", 1, "denied"},
		{userOutside, "vibes", 3, "permission denied on /run/tokend/tokend.sock: only members of group tokend-clients may connect"},
	} {
		out, code := s.CtlAs(c.user, tokenctl, "get", c.token)
		ok := code == c.code && (c.want == "" && issued(out) || c.want != "" && strings.Contains(out, c.want))
		if !ok {
			t.Errorf("%s: %s: tokenctl get %s: exit %d %q, want exit %d %q", when, c.user, c.token, code, out, c.code, c.want)
		}
	}
	if st, _ := exec.Command("nsenter", "-t", s.PID, "-m", "-p", "--", "stat", "-c", "%U:%G %a", "/run/tokend/tokend.sock").CombinedOutput(); strings.TrimSpace(string(st)) != "tokend:tokend-clients 660" {
		t.Errorf("%s: socket is %s, want tokend:tokend-clients 660", when, st)
	}
}
