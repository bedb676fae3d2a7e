package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
)

// Listen creates the Unix socket at path with the given mode and, when gid
// is not -1, group. The socket never exists at path with wider permissions:
// it is bound inside a fresh 0700 directory next to path, given its mode and
// group there, and only then renamed into place.
//
// A socket file left by a dead process is replaced. If a live server
// answers on path, or path is something other than a socket, Listen refuses
// rather than steal or destroy it.
//
// Closing the listener removes the socket file, if it is still ours.
func Listen(path string, mode os.FileMode, gid int) (net.Listener, error) {
	if err := checkStale(path); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(path), ".tokend-")
	if err != nil {
		return nil, fmt.Errorf("creating socket %q: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("creating socket %q: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("creating socket %q: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if gid != -1 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	return &ownedListener{UnixListener: ln, path: path, fi: fi}, nil
}

// checkStale decides whether path may be taken over.
func checkStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %q: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("socket %q: the path exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %q: another server is answering on it (is tokend already running?)", path)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return nil // stale: nobody listens; Rename will replace it
	}
	return fmt.Errorf("socket %q: cannot tell whether it is in use: %w", path, err)
}

type ownedListener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
}

// Addr is the socket's final path, not the private name it was bound to.
func (l *ownedListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *ownedListener) Close() error {
	err := l.UnixListener.Close()
	// Remove the file only if it is still the one we created: a newer
	// instance may have replaced it after deciding ours was stale.
	if fi, statErr := os.Lstat(l.path); statErr == nil && os.SameFile(fi, l.fi) {
		os.Remove(l.path)
	}
	return err
}

// Activating reports whether systemd passed this process sockets: Activated
// will take one.
func Activating() bool {
	if os.Getenv("LISTEN_FDS") == "" {
		return false
	}
	pid := os.Getenv("LISTEN_PID")
	return pid == "" || pid == strconv.Itoa(os.Getpid()) // else meant for another process (inherited environment)
}

// Activated returns the listening socket passed by systemd (LISTEN_FDS), or
// ok=false when the process was not socket-activated. Exactly one Unix
// stream listener is expected; anything else is an error that says what
// arrived, instead of go-systemd's silent skipping.
func Activated() (ln net.Listener, ok bool, err error) {
	if !Activating() {
		return nil, false, nil
	}
	files := activation.Files(true)
	if len(files) != 1 {
		for _, f := range files {
			f.Close()
		}
		return nil, true, fmt.Errorf("socket activation: want exactly 1 listening socket, got %d (check LISTEN_FDS, LISTEN_PID and the .socket unit)", len(files))
	}
	f := files[0]
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		return nil, true, fmt.Errorf("socket activation: descriptor %d (%s) is not a listening socket: %w", f.Fd(), f.Name(), err)
	}
	ul, isUnix := l.(*net.UnixListener)
	if !isUnix || ul.Addr().Network() != "unix" {
		l.Close()
		return nil, true, fmt.Errorf("socket activation: descriptor %s is a %s listener at %s, want a Unix stream socket (ListenStream=/path)", f.Name(), l.Addr().Network(), l.Addr())
	}
	return ul, true, nil
}
