package socket

import (
	"slices"
	"strings"
)

// Peer is who is on the other end of a connection, as the kernel saw it at
// connect time. UID and GID are the effective ids; Groups are the
// supplementary groups (SO_PEERGROUPS), so group allow lists work for
// members whose primary group differs. PID is for logs only: a PID can be
// reused, so it never authorises anything.
type Peer struct {
	UID, GID uint32
	PID      int32
	Groups   []uint32
	// Addr is the peer's socket address ("@" when unbound). systemd's
	// LoadCredential= client binds an abstract "@<hex>/unit/<unit>/<id>".
	Addr string
}

// InGroup reports whether gid is the peer's primary or a supplementary group.
func (p Peer) InGroup(gid uint32) bool {
	return p.GID == gid || slices.Contains(p.Groups, gid)
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
