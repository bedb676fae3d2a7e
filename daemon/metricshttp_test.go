package daemon

import (
	"net"
	"testing"
	"time"
)

// The metrics listener holds at most its cap of connections: past it new
// ones are closed at once, and a slot the server frees takes the next.
func TestMetricsConnectionCap(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := capListener(raw, 3)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		ne, timeout := err.(net.Error)
		return n == 0 && err != nil && !(timeout && ne.Timeout())
	}
	var served []net.Conn
	for range 3 {
		dial()
		served = append(served, <-accepted)
	}
	if !closed(dial()) {
		t.Fatal("a connection over the cap was kept open")
	}
	served[0].Close() // the server is done with one
	dial()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("a freed slot took no new connection")
	}
}
