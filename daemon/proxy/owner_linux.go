package proxy

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// tcpOwner is the uid owning the TCP socket whose local address is
// caller and whose peer is us, as /proc/net/tcp (or tcp6) lists it: what
// `ss -e` shows. The caller's socket is on this host (the proxy listens
// on loopback only), so it is listed there while it is connected.
func tcpOwner(caller, us netip.AddrPort) (uint32, error) {
	// /proc/self/net, not /proc/net: the unit's ProcSubset=pid hides the
	// latter, and both list the whole network namespace.
	files := []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"}
	if caller.Addr().Is6() && !caller.Addr().Is4In6() {
		files = files[1:]
	}
	for _, f := range files {
		uid, err := scanTCP(f, caller, us)
		if err == nil {
			return uid, nil
		}
		if !errors.Is(err, errNotListed) {
			return 0, err
		}
	}
	return 0, fmt.Errorf("the socket of caller %s is not in /proc/net/tcp: cannot tell who is calling", caller)
}

var errNotListed = errors.New("not listed")

func scanTCP(file string, caller, us netip.AddrPort) (uint32, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	six := strings.HasSuffix(file, "6")
	wantLocal, wantRemote := procAddr(caller, six), procAddr(us, six)
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[1] != wantLocal || fields[2] != wantRemote {
			continue
		}
		uid, err := strconv.ParseUint(fields[7], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%s: bad uid %q", file, fields[7])
		}
		return uint32(uid), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errNotListed
}

// procAddr writes an address as /proc/net/tcp{,6} does: the address's
// 32-bit words in host (little-endian) byte order, in hex, a colon, and
// the port in hex.
func procAddr(a netip.AddrPort, six bool) string {
	var raw []byte
	if six {
		b := a.Addr().As16() // a v4 address as ::ffff:a.b.c.d
		raw = b[:]
	} else {
		b := a.Addr().Unmap().As4()
		raw = b[:]
	}
	out := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		out[i], out[i+1], out[i+2], out[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	return strings.ToUpper(hex.EncodeToString(out)) + fmt.Sprintf(":%04X", a.Port())
}
