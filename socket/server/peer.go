package server

import (
	"net"
	"slices"
	"strings"
	"sync"
)

// Peer is who is on the other end of a connection, as the kernel saw it at
// connect time. UID and GID are the effective ids; the supplementary groups
// (SO_PEERGROUPS) count too, so group allow lists work for members whose
// primary group differs. PID is for logs only: a PID can be reused, so it
// never authorises anything.
type Peer struct {
	UID, GID uint32
	PID      int32
	// Groups are supplementary groups known up front; the kernel's list is
	// read when InGroup first needs it, since most requests never do.
	Groups []uint32
	// Addr is the peer's socket address ("@" when unbound). systemd's
	// LoadCredential= client binds an abstract "@<hex>/unit/<unit>/<id>".
	Addr string

	kernel *kernelGroups
}

// kernelGroups reads the peer's supplementary groups once, on first need.
type kernelGroups struct {
	once   sync.Once
	read   func() ([]uint32, error)
	groups []uint32
	err    error
}

// PeerOf reads the kernel's view of the process at the other end of c
// (SO_PEERCRED, SO_PEERGROUPS): for other listeners that apply the
// token's allow lists, such as the proxy's.
func PeerOf(c *net.UnixConn) (Peer, error) { return peerOf(c) }

// InGroup reports whether gid is the peer's primary or a supplementary
// group. Groups the kernel cannot tell count as no match (fail closed).
func (p Peer) InGroup(gid uint32) bool {
	if p.GID == gid || slices.Contains(p.Groups, gid) {
		return true
	}
	if p.kernel == nil {
		return false
	}
	k := p.kernel
	k.once.Do(func() { k.groups, k.err = k.read() })
	return k.err == nil && slices.Contains(k.groups, gid)
}

// Credential splits a LoadCredential= peer address into the unit name and
// credential id. The address is chosen by the peer, so it proves nothing; it
// only selects which token to hand out.
func (p Peer) Credential() (unit, id string, ok bool) {
	i := strings.Index(p.Addr, "/unit/")
	if i < 0 {
		return "", "", false
	}
	rest := p.Addr[i+len("/unit/"):]
	j := strings.LastIndexByte(rest, '/')
	if j <= 0 || j == len(rest)-1 {
		return "", "", false
	}
	return rest[:j], rest[j+1:], true
}
