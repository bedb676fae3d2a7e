package daemon

import (
	"fmt"
	"os/exec"
	"os/user"
	"strings"
	"testing"
)

// The users a real host has: non-root members of tokend-clients on and off
// a token's allow list, a member of an allowed group, and someone outside
// the socket's group. They are created on the host (the systemd-ns
// harness shares its /etc) and removed when the test ends.
const (
	userListed  = "tokend-t-ann" // tokend-clients, on vibes' allow_users
	userMember  = "tokend-t-bob" // tokend-clients, on no list
	userTeam    = "tokend-t-cat" // tokend-clients and tokend-t-team (team's allow_groups)
	userOutside = "tokend-t-eve" // not in tokend-clients
	groupTeam   = "tokend-t-team"
)

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
	del() // left over by a killed run
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
func ClientsConfig(vaultAddr, tokenFile, tokenURL string) string {
	return fmt.Sprintf(`
socket = "/run/tokend/tokend.sock"
default_token = "vibes"
[vault]
address = %[1]q
token_file = %[2]q
[token.vibes]
token_url = %[3]q
scope = "https://rbm.vibes.com/rbm.agents"
kv_path = "tokend/vibes"
retry_max = "1s"
allow_users = [%[4]q]
[token.team]
token_url = %[3]q
scope = "https://rbm.vibes.com/rbm.agents"
kv_path = "tokend/team"
retry_max = "1s"
allow_groups = [%[5]q]
`, vaultAddr, tokenFile, tokenURL, userListed, groupTeam)
}

// CtlAs runs tokenctl inside the namespaces as a user with its groups, the
// way a login shell or a unit with User= would.
func (s *SystemdNS) CtlAs(name, tokenctl string, args ...string) (out string, code int) {
	s.t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append([]string{"-t", s.PID, "-m", "-p", "--",
		"setpriv", "--reuid=" + u.Uid, "--regid=" + u.Gid, "--init-groups", tokenctl, "--socket", "/run/tokend/tokend.sock"}, args...)...)
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
		{userOutside, "vibes", 3, "permission denied"},
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
