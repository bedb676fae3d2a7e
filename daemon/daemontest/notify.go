package daemontest

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Notes are sd_notify messages as they arrive, from a NOTIFY_SOCKET or
// in-process.
type Notes struct {
	mu   sync.Mutex
	msgs []string
}

func (n *Notes) Send(state string) error {
	n.mu.Lock()
	n.msgs = append(n.msgs, state)
	n.mu.Unlock()
	return nil
}

// All returns every message, copied.
func (n *Notes) All() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.msgs)
}

// Index returns the position of the first message containing s, or -1.
func (n *Notes) Index(s string) int {
	return slices.IndexFunc(n.All(), func(m string) bool { return strings.Contains(m, s) })
}

func (n *Notes) Count(s string) int {
	c := 0
	for _, m := range n.All() {
		if strings.Contains(m, s) {
			c++
		}
	}
	return c
}

func (n *Notes) String() string { return strings.Join(n.All(), " | ") }

// NotifySocket is a real unixgram NOTIFY_SOCKET collecting messages.
type NotifySocket struct {
	Notes
	Path string
}

func ListenNotify(t *testing.T) *NotifySocket {
	n := &NotifySocket{Path: filepath.Join(t.TempDir(), "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.Send(string(buf[:k]))
		}
	}()
	return n
}
