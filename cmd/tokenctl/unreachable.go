package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"github.com/tokend/tokend/socket/proto"
)

// unreachable words why tokend could not be asked, with what to do about
// it: the person reading it wants the fix, not the system call.
func unreachable(client proto.Client, err error) string {
	path := client.Path
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Sprintf("no socket at %s: tokend doesn't appear to be running (sudo systemctl start tokend.socket), or it listens elsewhere (--socket PATH, $TOKEND_SOCKET)", path)
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return permissionDenied(path)
	case errors.Is(err, syscall.ECONNREFUSED):
		if fi, serr := os.Stat(path); serr == nil && fi.Mode()&fs.ModeSocket == 0 {
			return fmt.Sprintf("%s is not a socket (%s): check --socket or $TOKEND_SOCKET", path, kind(fi.Mode()))
		}
		return fmt.Sprintf("nothing listens on %s (a socket left by a stopped tokend?): sudo systemctl restart tokend.socket", path)
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("tokend at %s did not answer within %s: see its log (journalctl -u tokend)", path, client.Timeout)
	}
	return err.Error()
}

// permissionDenied names the group that may connect, and how to join it.
func permissionDenied(path string) string {
	group := "tokend-clients"
	if fi, err := os.Stat(path); err == nil {
		gid := fi.Sys().(*syscall.Stat_t).Gid
		group = strconv.FormatUint(uint64(gid), 10)
		if g, err := user.LookupGroupId(group); err == nil {
			group = g.Name
		}
	}
	return fmt.Sprintf("permission denied on %s: only members of group %s may connect; add the user that runs this (sudo usermod -aG %s USER), then log in again", path, group, group)
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	}
	return m.Type().String()
}
