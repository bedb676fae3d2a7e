package config

import (
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Proxy is one [proxy.NAME] table: a local HTTP listener that forwards
// every request to upstream with a token, for programs that cannot do
// OAuth themselves. The token's allow lists apply to its callers.
type Proxy struct {
	Name  string
	Token string // the token forwarded; the default token when the key is absent
	// Listen is "unix:/path" or a loopback "IP:port".
	Listen string
	// Upstream is scheme://host[:port][/base path]: the only host the
	// proxy ever contacts.
	Upstream     string
	InsecureHTTP bool        // allow_insecure_http: plain http to a host that is not loopback
	SocketMode   os.FileMode // for a unix: listener
	SocketGID    int         // -1: leave the group alone
	// SocketGroupName is socket_group as written, for messages.
	SocketGroupName string
}

// proxyKeys are the keys of a [proxy.NAME] table.
var proxyKeys = []string{"token", "listen", "upstream", "allow_insecure_http", "socket_mode", "socket_group"}

// proxies reads the [proxy.NAME] tables, once the tokens are known.
func (r *reader) proxies(v any, c *Config) {
	tables, _ := v.(map[string]any)
	if v != nil && tables == nil {
		r.fail("proxy", "want one table [proxy.NAME] per proxy, such as [proxy.api], got %s", tomlType(v))
	}
	listens := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		key := "proxy." + name
		m, ok := tables[name].(map[string]any)
		if !ok {
			r.fail(key, "want a table [%s], got %s", key, tomlType(tables[name]))
			continue
		}
		t := r.table(key, m, proxyKeys...)
		p := &Proxy{Name: name, Token: t.str("token", c.DefaultToken), Listen: t.str("listen", ""),
			Upstream: t.str("upstream", ""), InsecureHTTP: t.bool("allow_insecure_http", false), SocketMode: 0o660, SocketGID: -1}
		if c.Tokens[p.Token] == nil && p.Token != "" {
			r.fail(key+".token", "%q names no [token.%s] table", p.Token, p.Token)
		}
		r.proxyListen(key, p, c)
		if other, ok := listens[p.Listen]; ok && p.Listen != "" {
			r.fail(key+".listen", "%q is also %s.listen: each proxy needs an address of its own", p.Listen, other)
		}
		listens[p.Listen] = key
		if _, ok := m["socket_mode"]; ok || t.str("socket_group", "") != "" {
			if !strings.HasPrefix(p.Listen, "unix:") {
				r.fail(key+".socket_mode", "socket_mode and socket_group are for a unix: listen address; on loopback TCP the token's allow lists decide")
			}
		}
		p.SocketMode = r.mode(key+".socket_mode", m["socket_mode"], p.SocketMode)
		if g := t.str("socket_group", ""); g != "" {
			p.SocketGroupName = g
			gid, err := r.host.group(g)
			if err != nil {
				r.fail(key+".socket_group", "%v", err)
			}
			p.SocketGID = gid
		}
		if u := r.checkURL(key+".upstream", "", p.Upstream, p.InsecureHTTP); p.Upstream == "" {
			r.fail(key+".upstream", "missing: where the requests go, such as \"https://api.example.com\"")
		} else if u != nil && (u.User != nil || u.RawQuery != "" || u.Fragment != "") {
			r.fail(key+".upstream", "%q: want scheme://host[:port][/base path], without credentials, query or fragment", u.Redacted())
		}
		c.Proxies[name] = p
	}
}

// proxyListen checks a proxy's listen address: a Unix socket, or a
// loopback IP and port (never an address other machines reach: the
// proxy adds a token to whatever arrives).
func (r *reader) proxyListen(key string, p *Proxy, c *Config) {
	const want = `want "unix:/run/tokend-proxy/api.sock" or "127.0.0.1:8081"`
	switch path, unixSock := strings.CutPrefix(p.Listen, "unix:"); {
	case p.Listen == "":
		r.fail(key+".listen", "missing: %s", want)
	case unixSock && (!filepath.IsAbs(path) || len(path) > 107):
		r.fail(key+".listen", "%q: a Unix socket needs an absolute path of at most 107 bytes; %s", p.Listen, want)
	case unixSock && (filepath.Clean(path) == filepath.Clean(c.Socket) || "unix:"+filepath.Clean(path) == c.MetricsListen):
		r.fail(key+".listen", "%q is already the token socket or metrics_listen: give the proxy a socket of its own", p.Listen)
	case !unixSock:
		host, port, err := net.SplitHostPort(p.Listen)
		n, perr := strconv.Atoi(port)
		ip := net.ParseIP(host)
		switch {
		case err != nil || perr != nil:
			r.fail(key+".listen", "%q is not an address with a port; %s", p.Listen, want)
		case n < 1 || n > 65535:
			r.fail(key+".listen", "%q: port %d is out of range 1-65535", p.Listen, n)
		case ip == nil || !ip.IsLoopback():
			r.fail(key+".listen", "%q is not a loopback IP address: the proxy adds the token to every request it gets, so it listens on loopback or a Unix socket only; %s", p.Listen, want)
		case p.Listen == c.MetricsListen:
			r.fail(key+".listen", "%q is also metrics_listen", p.Listen)
		}
	}
}

// UpstreamURL is the proxy's upstream, parsed (checked at load).
func (p *Proxy) UpstreamURL() *url.URL {
	u, _ := url.Parse(p.Upstream)
	return u
}
