//go:build linux

package server

import (
	"cmp"
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerOf reads the kernel's view of the peer. Failing to read it is an
// error: the caller drops the connection rather than guess (fail closed).
func peerOf(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var (
		cred    *unix.Ucred
		credErr error
	)
	err = raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return Peer{}, fmt.Errorf("reading peer credentials: %w", err)
	}
	p := Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, kernel: &kernelGroups{read: func() (groups []uint32, err error) {
		// The groups as they were at connect time, like SO_PEERCRED.
		cerr := raw.Control(func(fd uintptr) { groups, err = peerGroups(int(fd)) })
		return groups, cmp.Or(cerr, err)
	}}}
	if a := c.RemoteAddr(); a != nil {
		p.Addr = a.String()
	}
	if p.Addr == "" {
		p.Addr = "@"
	}
	return p, nil
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13+). x/sys/unix has no typed
// getter for it, so the call is made by hand.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for {
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch errno {
		case 0:
			return buf[:size/4], nil
		case unix.ERANGE:
			// size now holds what the kernel needs.
			buf = make([]uint32, size/4+1)
		default:
			return nil, errno
		}
	}
}
