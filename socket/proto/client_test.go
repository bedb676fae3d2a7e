package proto

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// A connection that dies before its answer (the daemon was killed after
// accepting it) is asked once more; one that keeps dying is an error.
func TestClientRetriesOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		drops int32 // connections dropped before answering
		calls int32
		ok    bool
	}{
		{"answered", 0, 1, true},
		{"one dropped", 1, 2, true},
		{"always dropped", 100, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.sock")
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var calls atomic.Int32
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					n := calls.Add(1)
					if n <= tc.drops {
						// Closed with the request unread: the client sees a
						// reset or EOF, as from a killed daemon.
						c.Close()
						continue
					}
					bufio.NewReader(c).ReadString('\n')
					c.Write([]byte("OK PONG\n"))
					c.Close()
				}
			}()
			got, err := Client{Path: path, Timeout: 5 * time.Second}.Do(context.Background(), "PING")
			if tc.ok && (err != nil || got != "PONG") || !tc.ok && !errors.Is(err, errDied) {
				t.Errorf("Do = %q, %v", got, err)
			}
			if calls.Load() != tc.calls {
				t.Errorf("%d connections, want %d", calls.Load(), tc.calls)
			}
		})
	}
}
