package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket/proto"
)

// min=, on the real binary: with 20s tokens and min_remaining 2s, asking
// for 19s two seconds after a fetch makes exactly one token request and
// gets a token with at least 19s; asking again when that no longer holds,
// within 30s, is unavailable without a request; more than the lifetime is
// unavailable, saying why. JSON matches TOKEN.
func TestE2EMinFresh(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep.SetTTL(20)
	cfg := daemontest.StandInConfig(t, ep)
	cfg.Vibes().MinRemaining = "2s"
	d := daemontest.StartTokend(t, cfg)
	first := d.Token()
	c := proto.Client{Path: d.Sock, Timeout: 20 * time.Second}
	ask := func(req string) (string, error) { return c.Do(context.Background(), req) }

	// JSON: the token endpoint's shape, and the token TOKEN gives.
	out, err := ask("JSON")
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
		ExpiresAt   string `json:"expires_at"`
		Scope       string `json:"scope"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil || j.AccessToken != first || j.TokenType != "Bearer" ||
		j.ExpiresIn < 15 || j.ExpiresIn > 20 || j.Scope != daemontest.Scope {
		t.Errorf("JSON %q: %+v %v", out, j, err)
	}
	if at, err := time.Parse(time.RFC3339, j.ExpiresAt); err != nil || time.Until(at) > 21*time.Second {
		t.Errorf("expires_at %q %v", j.ExpiresAt, err)
	}

	time.Sleep(2 * time.Second)
	before := ep.IssuedCount()
	fresh, err := ask("TOKEN min=19")
	if err != nil || fresh == first {
		t.Fatalf("TOKEN min=19: %q %v (same as before: %v)", fresh, err, fresh == first)
	}
	if n := ep.IssuedCount() - before; n != 1 {
		t.Errorf("TOKEN min=19 made %d token requests, want 1", n)
	}
	info, _ := ask("JSON min=19")
	json.Unmarshal([]byte(info), &j)
	if j.AccessToken != fresh || j.ExpiresIn < 18 {
		t.Errorf("after min=19: %+v", j)
	}

	time.Sleep(2 * time.Second) // now it has about 17s left
	before = ep.IssuedCount()
	_, err = ask("TOKEN min=19")
	var perr *proto.Error
	if !errors.As(err, &perr) || perr.Code != proto.CodeUnavailable || !strings.Contains(perr.Msg, "at most one per 30s") {
		t.Errorf("a second early refresh within 30s: %v", err)
	}
	if _, err := ask("HEADER min=25"); !errors.As(err, &perr) || !strings.Contains(perr.Msg, "issues tokens for 20s") {
		t.Errorf("min= over the lifetime: %v", err)
	}
	if n := ep.IssuedCount() - before; n != 0 {
		t.Errorf("%d token requests for min= that cannot be met", n)
	}
	if out, errs, code := d.Ctl("get", "--min", "10"); code != 0 || out != fresh {
		t.Errorf("tokenctl get --min 10: %d %q %s", code, out, errs)
	}
	d.NoLeaks("csecret", first, fresh)
}

// WATCH and the file sink follow the token through a refresh, an outage
// past min_remaining and the recovery; the file is replaced whole (a
// reader looping on it never sees a partial one), has its mode and group,
// and is removed while unavailable and at stop.
func TestE2EWatchAndFile(t *testing.T) {
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "file_group needs chown")
	}
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep.SetTTL(4)
	dir, _ := os.MkdirTemp("", "tokend-files-")
	os.Chmod(dir, 0o750)
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "vibes.token")
	cfg := daemontest.StandInConfig(t, ep)
	v := cfg.Vibes()
	v.MinRemaining, v.RequestTimeout = "1s", "1s"
	v.File, v.FileMode, v.FileGroup = file, "0640", "65534"
	d := daemontest.StartTokend(t, cfg)
	first := d.Token()

	// A reader looping on the file: every read is the whole of an issued
	// token, or nothing.
	var reads, partial atomic.Int32
	stopReader := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stopReader:
				return
			default:
			}
			b, err := os.ReadFile(file)
			if err != nil {
				continue
			}
			reads.Add(1)
			if !ep.IssuedSince(0, string(b)) {
				partial.Add(1)
			}
		}
	}()

	fileIs := func(want string) bool { b, err := os.ReadFile(file); return err == nil && string(b) == want }
	daemontest.WaitFor(t, "the file", 5*time.Second, func() bool { return fileIs(d.Token()) })
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 || st.Sys().(*syscall.Stat_t).Gid != 65534 {
		t.Errorf("file mode %v gid %d, want 0640 and 65534", st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Gid)
	}
	inode := st.Sys().(*syscall.Stat_t).Ino

	conn, err := net.Dial("unix", d.Sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "WATCH\n")
	lines := make(chan string, 20)
	go func() {
		r := bufio.NewReader(conn)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- strings.TrimSuffix(l, "\n")
		}
	}()
	next := func(what string) string {
		select {
		case l := <-lines:
			return l
		case <-time.After(15 * time.Second):
			t.Fatalf("WATCH: no line for %s", what)
			return ""
		}
	}
	if l := next("the first token"); l != "OK "+first && !ep.IssuedSince(0, strings.TrimPrefix(l, "OK ")) {
		t.Fatalf("WATCH first: %q", l)
	}
	second := next("a refreshed token")
	if !strings.HasPrefix(second, "OK ") || second == "OK "+first {
		t.Errorf("WATCH after a refresh: %q", second)
	}
	daemontest.WaitFor(t, "the file to hold the new token", 5*time.Second, func() bool { return fileIs(strings.TrimPrefix(second, "OK ")) })
	if st, err := os.Stat(file); err == nil && st.Sys().(*syscall.Stat_t).Ino == inode {
		t.Errorf("the file was rewritten in place, not replaced")
	}

	// Outage past min_remaining: ERR unavailable, and no file.
	ep.FailAll(daemontest.Fault{Status: 503, Body: `{"error":"temporarily_unavailable"}`})
	for {
		l := next("unavailable")
		if strings.HasPrefix(l, "ERR unavailable ") {
			break
		}
		if !strings.HasPrefix(l, "OK ") {
			t.Fatalf("WATCH during the outage: %q", l)
		}
	}
	daemontest.WaitFor(t, "the file to be removed", 5*time.Second, func() bool { _, err := os.Stat(file); return os.IsNotExist(err) })

	// Recovery.
	ep.ClearFaults()
	back := next("the token after recovery")
	if !strings.HasPrefix(back, "OK ") {
		t.Errorf("WATCH after recovery: %q", back)
	}
	daemontest.WaitFor(t, "the file again", 10*time.Second, func() bool { _, err := os.Stat(file); return err == nil })

	// tokenctl watch --exec runs the command with each token.
	out := filepath.Join(dir, "exec.log")
	w := exec.Command(d.Tokenctl, "--socket", d.Sock, "watch", "--exec", `echo "$TOKEND_TOKEN" >> `+out)
	w.Start()
	daemontest.WaitFor(t, "tokenctl watch --exec to run twice", 15*time.Second, func() bool {
		b, _ := os.ReadFile(out)
		return strings.Count(string(b), "\n") >= 2
	})
	w.Process.Signal(syscall.SIGTERM)
	if err := w.Wait(); err != nil {
		t.Errorf("tokenctl watch after SIGTERM: %v", err)
	}
	b, _ := os.ReadFile(out)
	for _, tok := range strings.Fields(string(b)) {
		if !ep.IssuedSince(0, tok) {
			t.Errorf("--exec saw %q, not an issued token", tok)
		}
	}

	close(stopReader)
	<-readerDone
	if reads.Load() < 10 || partial.Load() > 0 {
		t.Errorf("reader: %d reads, %d not a whole issued token", reads.Load(), partial.Load())
	}
	d.Cmd.Process.Signal(syscall.SIGTERM)
	<-d.Done
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the file outlived tokend: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".vibes.token.*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	d.NoLeaks("csecret", first)
}

// A LoadCredential= consumer that connects before the first token exists
// (the endpoint takes 8s) gets the token: connect-and-read waits up to
// first_token_wait (30s), not the 5s of a request.
func TestE2EConnectAndReadWaitsForFirstToken(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	ep.Hold()
	d := daemontest.StartTokend(t, daemontest.StandInConfig(t, ep))
	go func() { time.Sleep(8 * time.Second); ep.Release() }()
	local := &net.UnixAddr{Name: fmt.Sprintf("@%x/unit/early.service/vibes", time.Now().UnixNano()), Net: "unix"}
	c, err := net.DialUnix("unix", local, &net.UnixAddr{Name: d.Sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CloseWrite()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(40 * time.Second))
	got, _ := io.ReadAll(c)
	if string(got) != ep.LastToken() || time.Since(start) < 5*time.Second {
		t.Errorf("after %v: %q, want the token issued after 8s", time.Since(start), got)
	}
}

// A Go program built against this module (replace to the checkout) gets an
// http.Client from socket.TokenSource and oauth2.NewClient; the API sees
// the token in Authorization.
func TestE2EGoTokenSource(t *testing.T) {
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	d := daemontest.StartTokend(t, daemontest.StandInConfig(t, ep))
	tok := d.Token()
	var mu sync.Mutex
	var seen []string
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, "hello")
	}))
	defer api.Close()

	dir := t.TempDir()
	write := func(name, text string) { os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644) }
	write("go.mod", "module example.com/consumer\n\ngo 1.26\n\nrequire github.com/tokend/tokend v0.0.0\n\nreplace github.com/tokend/tokend => "+daemontest.Root()+"\n")
	write("main.go", `package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"golang.org/x/oauth2"

	"github.com/tokend/tokend/socket"
)

func main() {
	client := oauth2.NewClient(context.Background(), oauth2.ReuseTokenSource(nil, socket.TokenSource{}))
	for i := 0; i < 2; i++ {
		resp, err := client.Get(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(b))
	}
}
`)
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "TOKEND_SOCKET="+d.Sock, "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	run("go", "mod", "tidy")
	run("go", "build", "-o", "consumer", ".")
	if out := run("./consumer", api.URL); out != "hello\nhello\n" {
		t.Errorf("consumer printed %q", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "Bearer "+tok || seen[1] != "Bearer "+tok {
		t.Errorf("the API saw Authorization %q", seen)
	}
}

// WATCH and JSON follow the allow lists for the users they are for: a uid
// off the list is denied both; a uid on it watches, and its watch ends
// with "denied" when a reload takes it off the list.
func TestE2EWatchAccess(t *testing.T) {
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "running tokenctl as other uids needs root")
	}
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	cfg := daemontest.StandInConfig(t, ep)
	cfg.SocketMode = "0666"
	cfg.Vibes().AllowUIDs = []int{4242}
	d := daemontest.StartTokend(t, cfg)
	tok := d.Token()
	allowed, other := &syscall.Credential{Uid: 4242, Gid: 4242}, &syscall.Credential{Uid: 65534, Gid: 65534}

	for _, args := range [][]string{{"json"}, {"watch"}} {
		out, errs, code := d.CtlAs(other, args...)
		if code != 1 || !strings.Contains(errs, "denied") || strings.Contains(out+errs, tok) {
			t.Errorf("uid 65534 %v: exit %d %q %q", args, code, out, errs)
		}
	}

	w := exec.Command(d.Tokenctl, "--socket", d.Sock, "watch")
	w.SysProcAttr = &syscall.SysProcAttr{Credential: allowed}
	stdout, _ := w.StdoutPipe()
	var stderr strings.Builder
	w.Stderr = &stderr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	// A deadline on every wait: a watch that prints nothing fails the
	// test rather than hanging it.
	type line struct {
		s   string
		err error
	}
	firstLine := make(chan line, 1)
	go func() {
		s, err := bufio.NewReader(stdout).ReadString('\n')
		firstLine <- line{s, err}
	}()
	select {
	case l := <-firstLine:
		if l.err != nil || l.s != tok+"\n" {
			t.Fatalf("uid 4242's watch: %q %v", l.s, l.err)
		}
	case <-time.After(10 * time.Second):
		w.Process.Kill()
		t.Fatalf("uid 4242's watch printed nothing in 10s")
	}
	moved := cfg.Clone()
	moved.Vibes().AllowUIDs = []int{65534}
	d.Write(moved)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "denied") {
			t.Errorf("uid 4242's watch after losing access: %v %q", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		w.Process.Kill()
		t.Fatalf("uid 4242's watch outlived its access")
	}
	if _, _, code := d.CtlAs(other, "json"); code != 0 {
		t.Errorf("uid 65534, now on the list: JSON exit %d", code)
	}
}
