package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// upstreamAPI is the API behind the proxy: https, it records what each
// request brought, answers with a digest of the body, and can reject a
// token once (401 invalid_token).
type upstreamAPI struct {
	*httptest.Server
	mu       sync.Mutex
	seen     []seenRequest
	rejected map[string]bool // tokens to reject once
}

type seenRequest struct {
	auth, method, path, query, proto string
	bodySHA                          string
	bodyLen                          int
}

func newUpstreamAPI(t *testing.T) (*upstreamAPI, string) {
	u := &upstreamAPI{rejected: map[string]bool{}}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		s := seenRequest{auth: r.Header.Get("Authorization"), method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, proto: r.Proto,
			bodySHA: hex.EncodeToString(h.Sum(nil)), bodyLen: int(n)}
		u.mu.Lock()
		u.seen = append(u.seen, s)
		reject := u.rejected[strings.TrimPrefix(s.auth, "Bearer ")]
		delete(u.rejected, strings.TrimPrefix(s.auth, "Bearer "))
		u.mu.Unlock()
		if reject {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token", error_description="revoked"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Upstream", "yes")
		fmt.Fprintf(w, "%s %s %d", r.Method, r.URL.Path, n)
	}))
	u.EnableHTTP2 = true
	u.StartTLS()
	t.Cleanup(u.Close)
	caFile := filepath.Join(t.TempDir(), "upstream-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: u.Certificate().Raw}), 0o644)
	return u, caFile
}

func (u *upstreamAPI) requests() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenRequest(nil), u.seen...)
}

// curlAs runs curl as uid (0: as root) and returns the status line's
// code and the body.
func curlAs(t *testing.T, uid int, args ...string) (code string, body string) {
	t.Helper()
	cmd := exec.Command("curl", append([]string{"-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"}, args...)...)
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %v as uid %d: %v\n%s", args, uid, err, out)
	}
	text := string(out)
	i := strings.LastIndex(text, "\n")
	return text[i+1:], text[:i]
}

// The local proxy ([proxy.NAME]) on the real binary: callers on and off
// the token's allow list, as non-root users, through a Unix socket and
// loopback TCP; the token replaces the caller's Authorization, path and
// query are kept under the upstream's base path, a 3 MiB upload arrives
// intact, an upstream 401 invalid_token is retried once with a refreshed
// token, and it is no open proxy.
func TestE2EProxy(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		daemontest.Need(t, "curl", "apt-get install curl")
	}
	const listed, unlisted = 4242, 65534
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	api, caFile := newUpstreamAPI(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("csecret\n"), 0o600)
	port := daemontest.FreePort(t)
	sockDir, _ := os.MkdirTemp("", "tokend-proxy-")
	os.Chmod(sockDir, 0o755)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	proxySock := filepath.Join(sockDir, "api.sock")
	cfg := daemontest.Config{
		LogLevel:             "debug",
		MaxConnectionsPerUID: 4,
		Token: map[string]*daemontest.TokenConfig{"vibes": {TokenURL: ep.TokenURL(), Scope: daemontest.Scope,
			ClientID: "cid", ClientSecretFile: secretFile, CAFile: caFile, AllowUIDs: []int{listed}}},
		Proxy: map[string]*daemontest.ProxyConfig{
			"api": {Listen: "unix:" + proxySock, Upstream: api.URL + "/base", SocketMode: "0666"},
			"tcp": {Listen: fmt.Sprintf("127.0.0.1:%d", port), Upstream: api.URL},
		},
	}
	d := daemontest.StartTokend(t, cfg)
	tok := d.Token("vibes")
	tcpURL := fmt.Sprintf("http://127.0.0.1:%d", port)

	// On the allow list, through the Unix socket: the token, not the
	// caller's Authorization, reaches the upstream.
	code, body := curlAs(t, listed, "--unix-socket", proxySock, "-H", "Authorization: Bearer caller-own", "http://proxy/v1/things?q=secret-query")
	if code != "200" || body != "GET /base/v1/things 0" {
		t.Fatalf("listed caller through the socket: %s %q", code, body)
	}
	last := api.requests()[len(api.requests())-1]
	if last.auth != "Bearer "+tok || last.query != "q=secret-query" || last.proto != "HTTP/2.0" {
		t.Errorf("the upstream saw Authorization %q, query %q, over %s (want HTTP/2)", last.auth, last.query, last.proto)
	}
	// Off the list, through either listener: 403, nothing reaches the API.
	before := len(api.requests())
	for _, args := range [][]string{{"--unix-socket", proxySock, "http://proxy/v1/things"}, {tcpURL + "/v1/things"}} {
		if code, body := curlAs(t, unlisted, args...); code != "403" || !strings.Contains(body, "denied") {
			t.Errorf("unlisted caller %v: %s %q", args, code, body)
		}
	}
	if n := len(api.requests()) - before; n != 0 {
		t.Errorf("%d requests of a denied caller reached the upstream", n)
	}
	// On the list, over loopback TCP: known by the socket's owner.
	if code, body := curlAs(t, listed, tcpURL+"/v2/x"); code != "200" || body != "GET /v2/x 0" {
		t.Errorf("listed caller over TCP: %s %q", code, body)
	}

	// A 3 MiB upload streams through intact.
	big := make([]byte, 3<<20)
	rand.Read(big)
	bigFile := filepath.Join(dir, "big")
	os.WriteFile(bigFile, big, 0o644)
	sum := sha256.Sum256(big)
	if code, body := curlAs(t, 0, "--data-binary", "@"+bigFile, tcpURL+"/upload"); code != "200" || body != fmt.Sprintf("POST /upload %d", len(big)) {
		t.Errorf("3 MiB upload: %s %q", code, body)
	}
	if last := api.requests()[len(api.requests())-1]; last.bodySHA != hex.EncodeToString(sum[:]) {
		t.Errorf("the upload arrived changed")
	}

	// The upstream rejects the token once: one forced refresh, one retry.
	api.mu.Lock()
	api.rejected[tok] = true
	api.mu.Unlock()
	issued := ep.IssuedCount()
	if code, body := curlAs(t, listed, "-d", "small body", tcpURL+"/retry"); code != "200" || body != "POST /retry 10" {
		t.Errorf("after invalid_token: %s %q", code, body)
	}
	reqs := api.requests()
	if a, b := reqs[len(reqs)-2], reqs[len(reqs)-1]; a.auth != "Bearer "+tok || b.auth == a.auth || b.auth != "Bearer "+ep.LastToken() || ep.IssuedCount() != issued+1 || b.bodyLen != 10 {
		t.Errorf("the retry: first %q, then %q (the endpoint issued %d more, last %q), body %d", a.auth, b.auth, ep.IssuedCount()-issued, ep.LastToken(), b.bodyLen)
	}

	// Not an open proxy: CONNECT and absolute-form requests are refused.
	for _, raw := range []string{"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
		"GET http://evil.example/steal HTTP/1.1\r\nHost: evil.example\r\n\r\n"} {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, raw)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil || resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("%q: %v %v", strings.SplitN(raw, "\r\n", 2)[0], resp, err)
		}
	}
	for _, r := range api.requests() {
		if strings.Contains(r.path, "steal") {
			t.Errorf("an absolute-form request reached the upstream: %+v", r)
		}
	}

	// max_connections_per_uid applies to the proxy's callers: uid 4242's
	// fifth connection is closed unanswered while it holds four.
	const holder = `
import socket, sys
held, answered = [], 0
for i in range(5):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.settimeout(5)
    s.sendall(b"GET /cap HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        if s.recv(100).startswith(b"HTTP/1.1 200"):
            answered += 1
    except OSError:
        pass
    held.append(s)
print(answered)
`
	capCmd := exec.Command("/usr/bin/python3", "-c", holder, fmt.Sprint(port))
	capCmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: listed, Gid: listed}}
	if out, err := capCmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "4" {
		t.Errorf("uid %d's five connections with max_connections_per_uid 4: %s answered (%v)", listed, out, err)
	}

	// 100 idle keep-alive connections: what they cost tokend in memory.
	rss := func() int {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.Cmd.Process.Pid))
		var kb int
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				fmt.Sscan(strings.TrimPrefix(l, "VmRSS:"), &kb)
			}
		}
		return kb
	}
	before = rss()
	var idle []net.Conn
	for range 100 {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("an idle connection's request: %v %v", resp, err)
		}
		idle = append(idle, c)
	}
	time.Sleep(500 * time.Millisecond)
	after := rss()
	t.Logf("RSS %d kB, with 100 idle proxy connections %d kB (+%d kB, %.1f kB each; a race-built binary: %v)",
		before, after, after-before, float64(after-before)/100, daemontest.Race)
	if after-before > 64<<10 {
		t.Errorf("100 idle connections cost %d kB", after-before)
	}

	m, err := proto.Client{Path: d.Sock}.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	metrics := daemontest.ParseMetrics(t, string(m))
	if v, ok := metrics.Value("tokend_proxy_requests_total", "proxy", "tcp", "code", "403"); !ok || v != 1 {
		t.Errorf("tokend_proxy_requests_total{proxy=tcp,code=403} = %v (%v)", v, ok)
	}
	if !bytes.Contains([]byte(d.Out.String()), []byte(`"path":"/v1/things"`)) {
		t.Errorf("the proxied requests are not logged")
	}
	d.NoLeaks("csecret", tok, "secret-query", "caller-own")
}
