package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/socket/proto"
	"github.com/tokend/tokend/socket/server"
)

// Addresses are written as /proc/net/tcp writes them.
func TestProcAddr(t *testing.T) {
	for _, c := range []struct {
		a    string
		six  bool
		want string
	}{
		{"127.0.0.1:8080", false, "0100007F:1F90"},
		{"127.0.0.1:8080", true, "0000000000000000FFFF00000100007F:1F90"},
		{"[::1]:443", true, "00000000000000000000000001000000:01BB"},
	} {
		if got := procAddr(netip.MustParseAddrPort(c.a), c.six); got != c.want {
			t.Errorf("%s (six %v): %s, want %s", c.a, c.six, got, c.want)
		}
	}
}

// The owner of a real loopback connection's client side is this
// process's uid, over IPv4 and IPv6.
func TestTCPOwner(t *testing.T) {
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", network)
		if err != nil {
			t.Logf("%s: %v (no such loopback here)", network, err)
			continue
		}
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		uid, err := tcpOwner(s.RemoteAddr().(*net.TCPAddr).AddrPort(), s.LocalAddr().(*net.TCPAddr).AddrPort())
		if err != nil || uid != uint32(os.Getuid()) {
			t.Errorf("%s: owner %d, %v; want %d", network, uid, err, os.Getuid())
		}
		c.Close()
		s.Close()
		ln.Close()
	}
	if _, err := tcpOwner(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")); err == nil {
		t.Error("an address nobody has: no error")
	}
}

func TestInvalidToken(t *testing.T) {
	for h, want := range map[string]bool{
		`Bearer error="invalid_token", error_description="expired"`: true,
		`DPoP error="invalid_token"`:                                true,
		`Bearer realm="api"`:                                        false,
		`Bearer error="insufficient_scope"`:                         false,
	} {
		if got := authError(http.Header{"Www-Authenticate": {h}}, "invalid_token"); got != want {
			t.Errorf("%q: %v", h, got)
		}
	}
}

// A caller that sends its headers slowly (slowloris) is cut off after
// the header timeout; the proxy answers others meanwhile.
func TestProxySlowHeaders(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer api.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := New(config.Proxy{Name: "api", Token: "api", Listen: ln.Addr().String(), Upstream: api.URL},
		Deps{Tokens: staticTokens{}, Log: zerolog.Nop(), IdleTimeout: time.Second})
	go p.Serve(ln)
	defer p.Shutdown(context.Background())
	slow, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	io.WriteString(slow, "GET / HTTP/1.1\r\nHost: x\r\n") // and never the end of the headers
	start := time.Now()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another caller meanwhile: %v %v", resp, err)
	}
	resp.Body.Close()
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := slow.Read(buf); err != nil {
			break // closed by the proxy (or its 408 read, then closed)
		}
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("the slow caller held its connection %s; the header timeout is 1s", took)
	}
}

// deniedTokens denies everyone.
type deniedTokens struct{ server.Tokens }

func (deniedTokens) Token(context.Context, server.Query, server.Peer) (server.Token, error) {
	return server.Token{}, &proto.Error{Code: proto.CodeDenied, Msg: "uid 1000 may not read token \"api\""}
}

// A denied caller repeating its request gets 403 each time, and one log
// line, not one per request (as on the token socket).
func TestProxyDeniedLogOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var mu sync.Mutex
	p := New(config.Proxy{Name: "api", Token: "api", Listen: ln.Addr().String(), Upstream: "http://127.0.0.1:1"},
		Deps{Tokens: deniedTokens{}, Log: zerolog.New(lockedWriter{&mu, &logs}), IdleTimeout: time.Second})
	go p.Serve(ln)
	defer p.Shutdown(context.Background())
	for range 50 {
		resp, err := http.Get("http://" + ln.Addr().String() + "/x?secret=1")
		if err != nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%v %v", resp, err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "proxy caller denied"); n != 1 || strings.Contains(logs.String(), "secret") {
		t.Errorf("%d log lines for 50 denials, want 1 (and no query):\n%s", n, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
