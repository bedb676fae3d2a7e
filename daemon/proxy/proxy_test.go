package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"os"
	"testing"
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
