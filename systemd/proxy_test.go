package systemd

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/tokend/tokend/daemon/daemontest"
)

// The proxy under the shipped, hardened unit and a real systemd
// (ProtectProc=invisible, ProcSubset=pid: the owner of a TCP caller's
// socket must still be readable), with non-root callers on and off the
// allow list, through a Unix socket in RuntimeDirectory=tokend-proxy and
// loopback TCP.
func TestRealSystemdProxy(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	var mu sync.Mutex
	var auths []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprintf(w, "api %s", r.URL.Path)
	}))
	defer api.Close()
	read, tokendBin, tokenctlBin := daemontest.Shipped(t)
	daemontest.HostUsers(t)
	port := daemontest.FreePort(t)
	cfg := daemontest.ClientsConfig("", "", ep.TokenURL())
	cfg.Vault = daemontest.VaultConfig{}
	for _, tc := range cfg.Token {
		tc.KVPath = ""
		tc.ClientID, tc.ClientSecretFile = "cid", "${CREDENTIALS_DIRECTORY}/vibes-secret"
	}
	cfg.Proxy = map[string]*daemontest.ProxyConfig{
		// Group tokend-clients, as the token socket: tokend is in it by
		// the drop-in's SupplementaryGroups=.
		"sock": {Token: "vibes", Listen: "unix:/run/tokend-proxy/api.sock", Upstream: api.URL, SocketGroup: "tokend-clients"},
		"tcp":  {Token: "vibes", Listen: fmt.Sprintf("127.0.0.1:%d", port), Upstream: api.URL},
	}
	s := daemontest.BootSystemd(t, map[string]string{
		"tokend.service": read("tokend.service"),
		"tokend.socket":  read("tokend.socket"),
		"tokend.service.d/test.conf": "[Service]\nExecStart=\nExecStart=/srv/tokend --config /srv/tokend.toml\n" +
			"LoadCredential=vibes-secret:/srv/secret.txt\nRuntimeDirectory=tokend-proxy\nSupplementaryGroups=tokend-clients\n",
	}, map[string][]byte{"tokend": tokendBin, "tokenctl": tokenctlBin, "tokend.toml": []byte(cfg.TOML()), "secret.txt": []byte("csecret\n")})
	s.Must("start", "tokend.service")

	curl := func(user string, args ...string) (string, string) {
		out, code := s.RunAs(user, append([]string{"curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"}, args...)...)
		if code != 0 {
			t.Fatalf("curl as %s: exit %d %s", user, code, out)
		}
		i := strings.LastIndex(out, "\n")
		return out[i+1:], out[:max(i, 0)]
	}
	for _, c := range []struct {
		user string
		args []string
		code string
	}{
		{daemontest.UserListed(), []string{"--unix-socket", "/run/tokend-proxy/api.sock", "http://api/v1/a"}, "200"},
		{daemontest.UserListed(), []string{fmt.Sprintf("http://127.0.0.1:%d/v1/b", port)}, "200"},
		{daemontest.UserMember(), []string{"--unix-socket", "/run/tokend-proxy/api.sock", "http://api/v1/c"}, "403"},
		{daemontest.UserMember(), []string{fmt.Sprintf("http://127.0.0.1:%d/v1/d", port)}, "403"},
	} {
		if code, body := curl(c.user, c.args...); code != c.code {
			t.Errorf("%s %v: %s %q, want %s", c.user, c.args, code, body, c.code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auths) != 2 || !ep.IssuedSince(0, strings.TrimPrefix(auths[0], "Bearer ")) || auths[1] != auths[0] {
		t.Errorf("the API saw %q; want the token twice (and nothing from denied callers)", auths)
	}
}
