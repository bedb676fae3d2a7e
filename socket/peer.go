package socket

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"unsafe"
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

const soPeerGroups = 59 // SO_PEERGROUPS, Linux 4.13+; not in package syscall

// peerOf reads the kernel's view of the peer. Failing to read it is an
// error: the caller drops the connection rather than guess (fail closed).
func peerOf(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var (
		cred    *syscall.Ucred
		groups  []uint32
		credErr error
	)
	err = raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		if credErr != nil {
			return
		}
		groups, credErr = peerGroups(int(fd))
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return Peer{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	p := Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, Groups: groups}
	if a := c.RemoteAddr(); a != nil {
		p.Addr = a.String()
	}
	if p.Addr == "" {
		p.Addr = "@"
	}
	return p, nil
}

func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for {
		size := uint32(len(buf) * 4)
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, soPeerGroups,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			return buf[:size/4], nil
		case syscall.ERANGE:
			// size now holds what the kernel needs.
			buf = make([]uint32, size/4+1)
		default:
			return nil, errno
		}
	}
}
