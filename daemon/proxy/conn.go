package proxy

import (
	"context"
	"net"
	"os"
	"os/user"
	"strconv"
	"sync"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/socket/server"
)

// Connections: who is calling (the kernel's word, per connection), and
// how many connections each uid holds.

type peerKey struct{}

// peerConn is an accepted connection and its caller.
type peerConn struct {
	net.Conn
	peer  server.Peer
	once  sync.Once
	conns *perUID
}

func (c *peerConn) Close() error {
	c.once.Do(func() { c.conns.release(c.peer.UID) })
	return c.Conn.Close()
}

// connContext puts the connection's caller in its requests' context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*peerConn); ok {
		return context.WithValue(ctx, peerKey{}, pc.peer)
	}
	return ctx
}

// listener identifies each caller at accept, and closes a connection
// whose caller cannot be identified (fail closed) or holds too many.
type listener struct {
	net.Listener
	p *Proxy
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer, err := callerOf(c)
		if err != nil {
			l.p.deps.Log.Warn().Str("error", err.Error()).Str("remote", c.RemoteAddr().String()).Msg("proxy caller unknown: connection closed")
			c.Close()
			continue
		}
		if !l.p.conns.take(peer.UID) {
			l.p.warnings.Warn(l.p.deps.Log, "proxy caller holds too many connections (max_connections_per_uid): connection closed", peer.UID, func(e *zerolog.Event) *zerolog.Event {
				return e.Int("max_connections_per_uid", l.p.conns.max)
			})
			c.Close()
			continue
		}
		return &peerConn{Conn: c, peer: peer, conns: l.p.conns}, nil
	}
}

// callerOf is the process at the other end of c: SO_PEERCRED on a Unix
// socket; on loopback TCP, the owner of the caller's socket as the
// kernel lists it, with that user's groups from the user database.
func callerOf(c net.Conn) (server.Peer, error) {
	switch c := c.(type) {
	case *net.UnixConn:
		return server.PeerOf(c)
	case *net.TCPConn:
		local, remote := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
		uid, err := tcpOwner(remote.AddrPort(), local.AddrPort())
		if err != nil {
			return server.Peer{}, err
		}
		p := server.Peer{UID: uid, GID: ^uint32(0), Addr: remote.String()}
		if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
			if gid, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
				p.GID = uint32(gid)
			}
			ids, _ := u.GroupIds()
			for _, g := range ids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					p.Groups = append(p.Groups, uint32(n))
				}
			}
		}
		return p, nil
	}
	return server.Peer{}, os.ErrInvalid
}

// perUID counts each uid's open connections. Root and this process's
// own uid are exempt, as on the token socket.
type perUID struct {
	max  int
	self uint32
	mu   sync.Mutex
	n    map[uint32]int
}

func newPerUID(max int) *perUID {
	return &perUID{max: max, self: uint32(os.Getuid()), n: map[uint32]int{}}
}

func (p *perUID) take(uid uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.max > 0 && uid != 0 && uid != p.self && p.n[uid] >= p.max {
		return false
	}
	p.n[uid]++
	return true
}

func (p *perUID) release(uid uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[uid]--; p.n[uid] <= 0 {
		delete(p.n, uid)
	}
}
