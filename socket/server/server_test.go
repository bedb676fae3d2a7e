package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"

	"github.com/rs/zerolog"
)

type fakeTokens struct {
	mu    sync.Mutex
	peers []Peer
	// updates feeds Watch: each is sent to the watchers, one each.
	updates chan watchEvent
}

type watchEvent struct {
	tok Token
	err error
	end error // ends the watch with this error
}

func (f *fakeTokens) Watch(ctx context.Context, q Query, p Peer, send func(Token, error) error) error {
	t, err := f.Token(ctx, q, p)
	if err != nil {
		return err
	}
	if err := send(t, nil); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-f.updates:
			if ev.end != nil {
				return ev.end
			}
			if err := send(ev.tok, ev.err); err != nil {
				return err
			}
		}
	}
}

func (f *fakeTokens) Token(ctx context.Context, q Query, p Peer) (Token, error) {
	name := q.Name
	f.mu.Lock()
	f.peers = append(f.peers, p)
	f.mu.Unlock()
	switch name {
	case "", "main":
		return Token{Name: "main", Type: "Bearer", Value: "tok-main", Scope: "s1 s2",
			ExpiresAt: time.Now().Add(100 * time.Second), FetchedAt: time.Now()}, nil
	case "other":
		return Token{Name: "other", Type: "Bearer", Value: "tok-other", ExpiresAt: time.Now().Add(time.Hour)}, nil
	case "locked":
		return Token{}, &proto.Error{Code: proto.CodeDenied, Msg: "no"}
	case "down":
		return Token{}, &proto.Error{Code: proto.CodeUnavailable, Msg: "endpoint down"}
	}
	return Token{}, &proto.Error{Code: proto.CodeUnknown, Msg: "no such token"}
}

// seen returns the peers that asked for a token.
func (f *fakeTokens) seen() []Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers)
}

func (f *fakeTokens) Names(Peer) []string { return []string{"main", "other"} }

// Proof is a stand-in proof that shows what it was asked for; "main" is
// the DPoP token.
func (f *fakeTokens) Proof(ctx context.Context, q Query, method, url string, p Peer) (string, error) {
	t, err := f.Token(ctx, q, p)
	if err != nil {
		return "", err
	}
	if t.Name != "main" {
		return "", &proto.Error{Code: proto.CodeBadRequest, Msg: "token " + t.Name + " is not a DPoP token"}
	}
	return "proof." + method + "." + url, nil
}

func (f *fakeTokens) Status(name string, p Peer) (proto.Status, error) {
	t, err := f.Token(context.Background(), Query{Name: name}, p)
	if err != nil {
		return proto.Status{}, err
	}
	return proto.Status{Name: t.Name, State: proto.StateOK, ExpiresIn: 100, RefreshIn: proto.Unknown, LastError: "a\nb"}, nil
}

// fakeExposition is what the fake answers METRICS with: several lines,
// as a real exposition has.
const fakeExposition = "# HELP tokend_x An example.\n# TYPE tokend_x gauge\ntokend_x 1\n"

func (f *fakeTokens) Metrics(Peer) ([]byte, error) { return []byte(fakeExposition), nil }

// serve starts a server on a fresh socket and returns its path and log.
func serve(t *testing.T, tune func(*Server)) (string, *daemontest.SyncBuf) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "t.sock")
	ln, err := Listen(path, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	logs := &daemontest.SyncBuf{}
	// The tests run as root, whom the limits exempt; here nobody is.
	s := &Server{Tokens: &fakeTokens{}, Log: zerolog.New(logs), exempt: func(uint32) bool { return false }}
	if tune != nil {
		tune(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path, logs
}

// converse sends raw bytes, half-closes, and returns everything read.
func converse(t *testing.T, path, send string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if send != "" {
		if _, err := io.WriteString(c, send); err != nil {
			t.Fatal(err)
		}
	}
	c.(*net.UnixConn).CloseWrite()
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(out)
}

func TestServerProtocol(t *testing.T) {
	path, _ := serve(t, nil)
	tests := []struct{ name, send, want string }{
		{"token", "TOKEN\n", "OK tok-main\n"},
		{"token named", "TOKEN other\n", "OK tok-other\n"},
		{"header", "HEADER\n", "OK Bearer tok-main\n"},
		{"ping", "ping\r\n", "OK PONG\n"},
		{"list", "LIST\n", "OK main other\n"},
		{"pipelined in order", "PING\nTOKEN other\nTOKEN\n", "OK PONG\nOK tok-other\nOK tok-main\n"},
		{"last line without newline", "TOKEN", "OK tok-main\n"},
		{"unknown", "TOKEN nope\n", "ERR unknown-token no such token\n"},
		{"denied", "TOKEN locked\n", "ERR denied no\n"},
		{"unavailable", "HEADER down\n", "ERR unavailable endpoint down\n"},
		{"bad then good", "\nPING\n", "ERR bad-request empty request; try PING, TOKEN [NAME] [min=SECONDS], HEADER, JSON, INFO, WATCH, STATUS [NAME], PROOF [NAME] METHOD URL, LIST or METRICS\nOK PONG\n"},
		{"proof", "PROOF GET https://api.example.com/v1/x?a=b\n", "OK proof.GET.https://api.example.com/v1/x?a=b\n"},
		{"proof named", "PROOF main POST https://api.example.com/\n", "OK proof.POST.https://api.example.com/\n"},
		{"proof of a bearer token", "PROOF other GET https://a/\n", "ERR bad-request token other is not a DPoP token\n"},
		{"proof denied", "PROOF locked GET https://a/\n", "ERR denied no\n"},
		{"proof without url", "PROOF GET\n", "ERR bad-request PROOF takes [NAME] METHOD URL, such as PROOF GET https://api.example.com/v1/things\n"},
		{"proof bad method", "PROOF get https://a/\n", "ERR bad-request PROOF: method \"get\": want an HTTP method in capitals, such as GET\n"},
		{"connect and read", "", "tok-main"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := converse(t, path, tt.send); got != tt.want {
				t.Errorf("sent %q: got %q, want %q", tt.send, got, tt.want)
			}
		})
	}
	t.Run("info", func(t *testing.T) {
		got := converse(t, path, "INFO\n")
		if !strings.HasPrefix(got, "OK name=main token_type=Bearer expires_in=") || !strings.HasSuffix(got, " scope=s1 s2\n") ||
			strings.Contains(got, "tok-main") || !strings.Contains(got, " expires_at=") || !strings.Contains(got, " fetched_at=") {
			t.Errorf("INFO = %q", got)
		}
		var in int
		fmt.Sscanf(got[strings.Index(got, "expires_in=")+len("expires_in="):], "%d", &in)
		if in < 95 || in > 100 {
			t.Errorf("expires_in = %d, want about 100", in)
		}
	})
}

func TestServerTooLong(t *testing.T) {
	path, _ := serve(t, nil)
	got := converse(t, path, strings.Repeat("A", 5000)+"\nPING\n")
	if got != "ERR too-long request line longer than 1024 bytes\n" {
		t.Errorf("got %q", got)
	}
	// Exactly proto.MaxLine bytes plus CRLF is still a line.
	got = converse(t, path, "PING"+strings.Repeat(" ", proto.MaxLine-4)+"\r\n")
	if got != "OK PONG\n" {
		t.Errorf("max line: got %q", got)
	}
}

// A LoadCredential= client binds an abstract address naming its unit and
// credential id; it gets that token, or the default when no token has the id.
func TestServerLoadCredential(t *testing.T) {
	path, logs := serve(t, nil)
	for id, want := range map[string]string{"other": "tok-other", "api-token": "tok-main"} {
		local := &net.UnixAddr{Name: fmt.Sprintf("@%x/unit/api-call.service/%s", time.Now().UnixNano(), id), Net: "unix"}
		c, err := net.DialUnix("unix", local, &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		out, _ := io.ReadAll(c)
		c.Close()
		if string(out) != want {
			t.Errorf("credential %s: got %q, want %q", id, out, want)
		}
	}
	if !strings.Contains(logs.String(), `"claimed_unit":"api-call.service"`) {
		t.Errorf("unit not logged: %s", logs)
	}
	if strings.Contains(logs.String(), "tok-") {
		t.Errorf("token in logs: %s", logs)
	}
}

func TestServerPeerCredentials(t *testing.T) {
	f := &fakeTokens{}
	path, _ := serve(t, func(s *Server) { s.Tokens = f })
	converse(t, path, "TOKEN\n")
	peers := f.seen()
	if len(peers) != 1 {
		t.Fatalf("peers: %v", peers)
	}
	p := peers[0]
	if p.UID != uint32(os.Getuid()) || p.GID != uint32(os.Getgid()) || p.PID != int32(os.Getpid()) {
		t.Errorf("peer %+v, want uid %d gid %d pid %d", p, os.Getuid(), os.Getgid(), os.Getpid())
	}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if !p.InGroup(uint32(g)) {
			t.Errorf("peer lacks supplementary group %d: %v", g, p.Groups)
		}
	}
}

// hold opens a connection and proves it is being served, so that it holds
// one of the server's slots until the test ends or the server closes it.
func hold(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprint(c, "PING\n")
	if l, _ := bufio.NewReader(c).ReadString('\n'); l != "OK PONG\n" {
		t.Fatalf("held connection: %q", l)
	}
	return c
}

func TestServerBusyAndIdle(t *testing.T) {
	path, _ := serve(t, func(s *Server) { s.SetMaxConns(2); s.IdleTimeout = 300 * time.Millisecond })
	held := []net.Conn{hold(t, path), hold(t, path)}
	if got := converse(t, path, "PING\n"); got != "ERR busy too many connections, try again\n" {
		t.Errorf("third connection: %q", got)
	}
	// Idle connections are closed, which frees the slots.
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("idle connection not closed: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for converse(t, path, "PING\n") != "OK PONG\n" {
		if time.Now().After(deadline) {
			t.Fatal("slots not freed after idle timeout")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Random bytes never crash the server or yield a token.
func TestServerGarbage(t *testing.T) {
	path, _ := serve(t, nil)
	junk := []string{"\x00\x01\x02\n", "\xff\xfe TOKEN\n", "TOKEN ../../etc\n", "TOKEN main extra\n", "\r\n", "TOKEN\x00main\n"}
	for _, j := range junk {
		got := converse(t, path, j)
		if strings.Contains(got, "tok-") || !strings.HasPrefix(got, "ERR bad-request ") {
			t.Errorf("sent %q: got %q", j, got)
		}
	}
}

func TestListenStaleAndLive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")

	// A stale socket (nobody listening) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ln, err := Listen(path, 0o640, -1)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}

	// A live one is not taken over.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(path, 0o600, -1); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	ln.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}

	// A regular file is never removed.
	os.WriteFile(path, []byte("precious"), 0o600)
	if _, err := Listen(path, 0o600, -1); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Error("regular file damaged")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestListenGroup(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("TOKEND_E2E") == "1" {
			t.Fatal("chown to another group needs root, and TOKEND_E2E=1 forbids skipping")
		}
		// Loud even without -v: go test hides a plain skip.
		fmt.Fprintf(os.Stderr, "!!! SKIP %s: chown to another group needs root (CI runs it as root)\n", t.Name())
		t.Skip("SKIP: chown to another group needs root")
	}
	path := filepath.Join(t.TempDir(), "g.sock")
	ln, err := Listen(path, 0o660, 65534)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, _ := os.Stat(path)
	if st := fi.Sys().(*syscall.Stat_t); st.Gid != 65534 || fi.Mode().Perm() != 0o660 {
		t.Errorf("gid %d mode %v", st.Gid, fi.Mode())
	}
}

// A flood of refused connections gives a few summary lines, not one each,
// and the summaries count every refusal.
func TestServerBusyLogSummary(t *testing.T) {
	path, logs := serve(t, func(s *Server) { s.SetMaxConns(1); s.warnings.interval = 500 * time.Millisecond })
	hold(t, path)
	const n = 50
	start := time.Now()
	for i := 0; i < n; i++ {
		if got := converse(t, path, "PING\n"); !strings.HasPrefix(got, "ERR busy ") {
			t.Fatalf("connection %d: %q", i, got)
		}
	}
	total := func() (lines, refused int) {
		for _, l := range strings.Split(logs.String(), "\n") {
			var e struct {
				Message string
				Count   int
			}
			if json.Unmarshal([]byte(l), &e) == nil && e.Message == "connections refused: too many connections" {
				lines++
				refused += e.Count
			}
		}
		return lines, refused
	}
	// One line at the first refusal, then at most one per interval.
	most := 2 + int(time.Since(start)/(500*time.Millisecond))
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines, refused := total()
		if refused == n {
			if lines > most {
				t.Errorf("%d log lines for %d refusals, want at most %d", lines, n, most)
			}
			break
		}
		if refused > n || time.Now().After(deadline) {
			t.Fatalf("logged %d refusals in %d lines, want %d:\n%s", refused, lines, n, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Refused connections linger to tell a request from a connect-and-read
// client, but only so many at once: past the bound a flood is glanced at
// and closed, and the server keeps no more goroutines for it.
func TestServerBusyLingerBound(t *testing.T) {
	path, _ := serve(t, func(s *Server) { s.SetMaxConns(1); s.maxLingering = 4 })
	hold(t, path)
	base := runtime.NumGoroutine()
	// Silent clients: each refusal lingers until its one-second deadline.
	var conns []net.Conn
	for i := 0; i < 40; i++ {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// Every silent client is closed within the linger time, with nothing
	// written: what it would read could be taken for a token.
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("a refused client hung")
		}
		if len(b) != 0 {
			t.Errorf("a silent refused client read %q", b)
		}
		if n := runtime.NumGoroutine() - base; n > 4+2 {
			t.Fatalf("%d goroutines for refused connections, want at most 4 (+2 slack)", n)
		}
	}
	// Clients that ask hear ERR busy, past the bound too.
	for i := 0; i < 40; i++ {
		if got := converse(t, path, "PING\n"); got != "ERR busy too many connections, try again\n" {
			t.Fatalf("asking client %d: %q", i, got)
		}
	}
}

// A connect-and-read client (LoadCredential=) that cannot be served
// because the server is busy gets nothing, never ERR text that would
// become its credential.
func TestServerBusyConnectAndRead(t *testing.T) {
	path, _ := serve(t, func(s *Server) { s.SetMaxConns(1) })
	hold(t, path)
	for i := 0; i < 3; i++ {
		if got := converse(t, path, ""); got != "" {
			t.Errorf("busy connect-and-read client got %q", got)
		}
	}
}

// A client that pipelines requests and never reads its answers is closed
// after the idle timeout (the server's writes have deadlines, bufio's
// implicit flushes too), and its slot is freed.
func TestServerPipelinerNeverReads(t *testing.T) {
	path, _ := serve(t, func(s *Server) { s.SetMaxConns(1); s.IdleTimeout = 300 * time.Millisecond })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		req := []byte(strings.Repeat("PING\n", 1000))
		c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := c.Write(req); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the server never closed a client that does not read")
		}
	case <-time.After(25 * time.Second):
		t.Fatal("writer still going")
	}
	deadline := time.Now().Add(5 * time.Second)
	for converse(t, path, "PING\n") != "OK PONG\n" {
		if time.Now().After(deadline) {
			t.Fatal("the slot was not freed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// 100k denied requests make a few log lines, summed per uid.
func TestServerDeniedLogSummary(t *testing.T) {
	path, logs := serve(t, func(s *Server) { s.warnings.interval = 300 * time.Millisecond })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 100000
	start := time.Now()
	go io.WriteString(c, strings.Repeat("TOKEN locked\n", n))
	r := bufio.NewReader(c)
	for i := 0; i < n; i++ {
		if l, err := r.ReadString('\n'); err != nil || l != "ERR denied no\n" {
			t.Fatalf("answer %d: %q %v", i, l, err)
		}
	}
	want := fmt.Sprintf(`"%d":`, os.Getuid())
	waitForLog := time.Now().Add(5 * time.Second)
	for {
		lines, total := 0, 0
		for _, l := range strings.Split(logs.String(), "\n") {
			var e struct {
				Message string
				Count   int
			}
			if json.Unmarshal([]byte(l), &e) == nil && e.Message == "peer denied" {
				lines++
				total += e.Count
				if e.Count > 1 && !strings.Contains(l, want) {
					t.Errorf("summary without the uid: %s", l)
				}
			}
		}
		if total == n {
			// One line at the first denial, then one per interval (two
			// allow for timers firing late under the race detector).
			if most := 2 * (1 + int(time.Since(start)/(300*time.Millisecond))); lines > most {
				t.Errorf("%d log lines for %d denied requests in %v, want at most %d", lines, n, time.Since(start), most)
			}
			break
		}
		if time.Now().After(waitForLog) {
			t.Fatalf("logged %d of %d denied requests in %d lines", total, n, lines)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// One uid holding its share of slots gets ERR busy; an exempt uid (root,
// the server's own) is not capped per uid and has slots reserved past
// max_connections.
func TestServerPerUIDCap(t *testing.T) {
	path, _ := serve(t, func(s *Server) { s.SetMaxConns(10); s.SetMaxPerUID(2) })
	hold(t, path)
	hold(t, path)
	if got := converse(t, path, "PING\n"); got != "ERR busy too many connections from this uid, try again\n" {
		t.Errorf("third connection of one uid: %q", got)
	}
	me := uint32(os.Getuid())
	path, _ = serve(t, func(s *Server) {
		s.SetMaxConns(2)
		s.SetMaxPerUID(1)
		s.exempt = func(uid uint32) bool { return uid == me }
	})
	for i := 0; i < 4; i++ {
		hold(t, path) // past both caps, within the reserve
	}
	if got := converse(t, path, "PING\n"); got != "OK PONG\n" {
		t.Errorf("exempt uid: %q", got)
	}
}

// countingMeter counts requests by verb and code.
type countingMeter struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *countingMeter) Request(verb proto.Verb, code string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == nil {
		m.n = map[string]int{}
	}
	m.n[string(verb)+" "+code]++
}

func (m *countingMeter) get(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[key]
}

// STATUS and METRICS pipelined with other requests: METRICS's counted body
// leaves the next answer where it belongs, and every answer is counted by
// verb and code.
func TestStatusMetricsAndMeter(t *testing.T) {
	meter := &countingMeter{}
	path, _ := serve(t, func(s *Server) { s.Meter = meter })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "STATUS\nMETRICS\nPING\nSTATUS locked\nTOKEN a b\nBOGUS\nTOKEN\n")
	c.(*net.UnixConn).CloseWrite()
	r := bufio.NewReader(c)
	line := func() string {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading an answer: %v", err)
		}
		return strings.TrimSuffix(l, "\n")
	}
	if got := line(); got != `OK name=main state=ok expires_in=100 refresh_in=- failures=0 last_success=- last_error=a\x0ab` {
		t.Errorf("STATUS: %q", got)
	}
	if got := line(); got != fmt.Sprintf("OK %d", len(fakeExposition)) {
		t.Fatalf("METRICS: %q", got)
	}
	body := make([]byte, len(fakeExposition))
	if _, err := io.ReadFull(r, body); err != nil || string(body) != fakeExposition {
		t.Fatalf("METRICS body %q %v", body, err)
	}
	for _, want := range []string{"OK PONG", "ERR denied no", "ERR bad-request", "ERR bad-request", "OK tok-main"} {
		if got := line(); !strings.HasPrefix(got, want) {
			t.Errorf("answer %q, want %q…", got, want)
		}
	}
	waitFor(t, "the last count", func() bool { return meter.get("TOKEN ok") == 1 })
	for key, want := range map[string]int{"STATUS ok": 1, "METRICS ok": 1, "PING ok": 1, "STATUS denied": 1,
		"TOKEN bad-request": 1, "OTHER bad-request": 1, "TOKEN ok": 1} {
		if got := meter.get(key); got != want {
			t.Errorf("%s counted %d times, want %d (all: %v)", key, got, want, meter.n)
		}
	}

	// The client reads the counted body.
	got, err := proto.Client{Path: path}.Metrics(context.Background())
	if err != nil || string(got) != fakeExposition {
		t.Errorf("Client.Metrics: %q %v", got, err)
	}
	// Connect-and-read counts as BARE.
	bare, _ := net.Dial("unix", path)
	bare.(*net.UnixConn).CloseWrite()
	io.ReadAll(bare)
	bare.Close()
	waitFor(t, "the BARE count", func() bool { return meter.get("BARE ok") == 1 })
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// JSON has the token endpoint's shape; WATCH sends the token, each change,
// errors while unavailable, a last error when the watch ends, and stops
// when the client closes.
func TestJSONAndWatch(t *testing.T) {
	tokens := &fakeTokens{updates: make(chan watchEvent)}
	meter := &countingMeter{}
	path, _ := serve(t, func(s *Server) { s.Tokens = tokens; s.Meter = meter })

	out, err := proto.Client{Path: path}.Do(context.Background(), "JSON main")
	if err != nil {
		t.Fatal(err)
	}
	var j map[string]any
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("JSON answer %q: %v", out, err)
	}
	if j["access_token"] != "tok-main" || j["token_type"] != "Bearer" || j["scope"] != "s1 s2" {
		t.Errorf("JSON: %v", j)
	}
	if in, _ := j["expires_in"].(float64); in < 98 || in > 100 {
		t.Errorf("expires_in %v, want about 100", j["expires_in"])
	}
	if at, err := time.Parse(time.RFC3339, fmt.Sprint(j["expires_at"])); err != nil || time.Until(at) < 90*time.Second {
		t.Errorf("expires_at %v %v", j["expires_at"], err)
	}

	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "WATCH\n")
	r := bufio.NewReader(c)
	line := func() string {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		return strings.TrimSuffix(l, "\n")
	}
	if got := line(); got != "OK tok-main" {
		t.Fatalf("first: %q", got)
	}
	// Every wait has a deadline: a watch that stops taking updates fails
	// the test, saying so, instead of hanging it.
	send := func(ev watchEvent) {
		t.Helper()
		select {
		case tokens.updates <- ev:
		case <-time.After(5 * time.Second):
			t.Fatalf("the watch took no update for 5s (sending %+v)", ev)
		}
	}
	send(watchEvent{tok: Token{Value: "tok-2"}})
	send(watchEvent{err: &proto.Error{Code: proto.CodeUnavailable, Msg: "expired\nREADY=1"}})
	send(watchEvent{tok: Token{Value: "tok-3"}})
	send(watchEvent{end: &proto.Error{Code: proto.CodeDenied, Msg: "access removed"}})
	for _, want := range []string{"OK tok-2", `ERR unavailable expired\x0aREADY=1`, "OK tok-3", "ERR denied access removed"} {
		if got := line(); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(r); err != nil || len(rest) > 0 {
		t.Errorf("after the last error: %q %v, want EOF", rest, err)
	}
	c.Close()
	if meter.get("WATCH ok") != 1 || meter.get("JSON ok") != 1 {
		t.Errorf("counts: %v", meter.n)
	}

	// The client closing ends the watch: the fake sees no more sends.
	c2, _ := net.Dial("unix", path)
	io.WriteString(c2, "WATCH\n")
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(c2).ReadString('\n'); err != nil {
		t.Fatalf("the second watch's first answer: %v", err)
	}
	c2.Close()
	select {
	case tokens.updates <- watchEvent{tok: Token{Value: "late"}}:
		// Taken by a watch still running; it must end on the failed write.
		select {
		case tokens.updates <- watchEvent{tok: Token{Value: "later"}}:
			t.Errorf("a watch outlived its client")
		case <-time.After(time.Second):
		}
	case <-time.After(2 * time.Second):
	}
}

// Watches count toward the connection caps: a uid holding its share in
// watches is refused another connection, and gets it once a watch ends.
func TestWatchesCountTowardCaps(t *testing.T) {
	path, _ := serve(t, func(s *Server) { s.SetMaxPerUID(2) })
	watch := func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "WATCH\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if l, err := bufio.NewReader(c).ReadString('\n'); err != nil || l != "OK tok-main\n" {
			t.Fatalf("WATCH: %q %v", l, err)
		}
		return c
	}
	w1, w2 := watch(), watch()
	defer w2.Close()
	if got := converse(t, path, "PING\n"); got != "ERR busy too many connections from this uid, try again\n" {
		t.Errorf("a third connection beside two watches: %q", got)
	}
	w1.Close() // ends that watch and frees its slot
	waitFor(t, "the slot to free", func() bool { return converse(t, path, "PING\n") == "OK PONG\n" })
}

// A flood of refused connections must not slow the accept loop: past the
// linger bound, refusals are glanced at by a few goroutines or closed at
// once. Before, each waited 10 ms in the accept loop, so a client queued
// behind 3,000 silent connections waited about 30 s, or, with the listen
// backlog full, could not connect at all (EAGAIN).
func TestServerFloodDoesNotStallAccept(t *testing.T) {
	path, _ := serve(t, func(s *Server) { s.SetMaxConns(1); s.maxLingering = 4 })
	hold(t, path)
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 3000 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("flood connect %d: %v", len(flood), err)
		}
		flood = append(flood, c) // silent: never writes
	}
	// The request is refused (the server is full), by ERR busy or, with
	// the glancers behind, a close; what matters is that it is accepted
	// at once rather than queued behind the flood.
	began := time.Now()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect behind the flood: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "PING\n")
	got, err := io.ReadAll(c)
	took := time.Since(began)
	t.Logf("a request behind 3,000 refused connections: %q, %v, in %v", got, err, took.Round(time.Millisecond))
	if ne, ok := err.(net.Error); (ok && ne.Timeout()) || took > 5*time.Second {
		t.Errorf("a request behind the flood waited %v (%v): the accept loop stalled", took, err)
	}
	if len(got) > 0 && !strings.HasPrefix(string(got), "ERR busy") {
		t.Errorf("a refused request read %q", got)
	}
}

// A flood of too-long lines gives summary lines, not one warning each.
func TestServerTooLongLogSummary(t *testing.T) {
	path, logs := serve(t, func(s *Server) { s.warnings.interval = time.Hour })
	long := strings.Repeat("x", proto.MaxLine+10) + "\n"
	for i := 0; i < 50; i++ {
		if got := converse(t, path, long); !strings.HasPrefix(got, "ERR too-long ") {
			t.Fatalf("connection %d: %q", i, got)
		}
	}
	if n := strings.Count(logs.String(), "request line too long"); n != 1 {
		t.Errorf("%d log lines for 50 too-long requests, want 1 (then one summary per interval):\n%s", n, logs)
	}
}
