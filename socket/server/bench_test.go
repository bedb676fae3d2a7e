package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/socket/proto"
)

// BenchmarkRoundTrip measures a request over the socket against a baseline
// measured in the same run: a bare Unix-socket line echo server, which is
// the floor any protocol on this transport pays. Compare ns/op:
//
//	go test -run '^$' -bench RoundTrip -benchtime 2s ./socket/
func BenchmarkRoundTrip(b *testing.B) {
	dir := b.TempDir()

	echo := filepath.Join(dir, "echo.sock")
	eln, err := net.Listen("unix", echo)
	if err != nil {
		b.Fatal(err)
	}
	defer eln.Close()
	go func() {
		for {
			c, err := eln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r, w := bufio.NewReader(c), bufio.NewWriter(c)
				for {
					if _, err := r.ReadSlice('\n'); err != nil {
						return
					}
					w.WriteString("OK tok-main\n")
					w.Flush()
				}
			}()
		}
	}()

	tokend := filepath.Join(dir, "tokend.sock")
	ln, err := Listen(tokend, 0o600, -1)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go (&Server{Tokens: &benchTokens{}, Log: zerolog.Nop()}).Serve(ctx, ln)

	for _, tc := range []struct{ name, path, req string }{
		{"baseline-echo", echo, "TOKEN\n"},
		{"tokend-TOKEN", tokend, "TOKEN\n"},
		{"tokend-HEADER", tokend, "HEADER main\n"},
	} {
		b.Run("conn-reuse/"+tc.name, func(b *testing.B) {
			c, err := net.Dial("unix", tc.path)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			for i := 0; i < b.N; i++ {
				fmt.Fprint(c, tc.req)
				if _, err := r.ReadSlice('\n'); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("conn-per-request/"+tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				c, err := net.Dial("unix", tc.path)
				if err != nil {
					b.Fatal(err)
				}
				fmt.Fprint(c, tc.req)
				if _, err := bufio.NewReader(c).ReadSlice('\n'); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

type benchTokens struct{ fakeTokens }

// Token skips fakeTokens' bookkeeping of peers, which would grow forever.
func (f *benchTokens) Token(ctx context.Context, q Query, p Peer) (Token, error) {
	return Token{Name: "main", Type: "Bearer", Value: "tok-main"}, nil
}

// TOKEN and HEADER on a kept-alive connection allocate nothing in the
// server (the client here reuses its buffers too; the count is the whole
// process's).
func TestKeepAliveAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; .ci/test runs this test without it too")
	}
	path := filepath.Join(t.TempDir(), "a.sock")
	ln, err := Listen(path, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	meter := &tallyMeter{}
	go (&Server{Tokens: &benchTokens{}, Meter: meter, Log: zerolog.Nop()}).Serve(ctx, ln)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct{ req, want string }{
		{"TOKEN\n", "OK tok-main\n"},
		{"TOKEN main\n", "OK tok-main\n"},
		{"HEADER main\n", "OK Bearer tok-main\n"},
	} {
		req, buf := []byte(tc.req), make([]byte, len(tc.want))
		roundTrip := func() {
			c.Write(req)
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != tc.want {
				t.Fatalf("%q: %q %v", tc.req, buf, err)
			}
		}
		roundTrip() // the first request of a name interns it
		if n := testing.AllocsPerRun(1000, roundTrip); n > 0 {
			t.Errorf("%q: %.1f allocations per request, want 0", tc.req, n)
		}
	}
	if meter.n.Load() < 3000 {
		t.Errorf("the meter counted %d requests", meter.n.Load())
	}
}

// tallyMeter counts requests the way the daemon's does: one atomic add.
type tallyMeter struct{ n atomic.Int64 }

func (m *tallyMeter) Request(proto.Verb, string) { m.n.Add(1) }
