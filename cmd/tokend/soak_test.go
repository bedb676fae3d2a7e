package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
	"github.com/tokend/tokend/socket"
	"github.com/tokend/tokend/socket/proto"
)

// The chaos soak: the real binary, short tokens, an endpoint that fails
// in every way tokend handles, a real Vault sealed and its token revoked,
// SIGHUP storms that change the configuration, kill -9 under socket
// activation, and clients of every kind all the while. It checks what
// tokend promises against the endpoint's own record of what it issued:
// no token served that it did not issue, none with less than
// min_remaining left, no request without an answer, no denied uid ever
// served, the file sink never partial or stale; and that descriptors,
// goroutines and memory stay flat.
//
// 60 s by default; TOKEND_SOAK=10m for longer. The seed is printed;
// TOKEND_SOAK_SEED replays one. kill -9 comes in the first third (so that
// the rest measures one process's resources), or throughout with
// TOKEND_SOAK_KILLS=all.
func TestSoak(t *testing.T) {
	length := 60 * time.Second
	if v := os.Getenv("TOKEND_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("TOKEND_SOAK=%q: %v", v, err)
		}
		length = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("TOKEND_SOAK_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TOKEND_SOAK_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("soak for %v, seed %d (replay: TOKEND_SOAK_SEED=%d)", length, seed, seed)
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "the soak's clients run as other uids")
	}
	s := newSoak(t, seed)
	s.run(length)
	s.report(t)
}

const (
	soakTTL          = 4 * time.Second
	soakMinRemaining = time.Second
	// soakSlack is the scheduling allowance between tokend's check of a
	// token and its client's receipt of it.
	soakSlack = 750 * time.Millisecond
	uidListed = 4242  // on the allow list
	uidDenied = 65534 // never on it
)

type soak struct {
	t        *testing.T
	dir      string
	sock     string
	sink     string
	config   string
	tokend   string
	tokenctl string
	listener *os.File
	vault    *daemontest.Vault
	tokFile  string
	unseal   string
	ep       *chaosEndpoint
	rnd      *rand.Rand // the conductor's; each client has its own

	mu       sync.Mutex
	proc     *exec.Cmd
	procDone chan struct{}
	out      daemontest.SyncBuf

	served, unavailable, lost, denied atomic.Int64
	kills, hups, seals, revokes       atomic.Int64
	violations                        []string
	samples                           []sample
	steadyFrom                        time.Time // after the last kill -9
	watchLast                         time.Time // tokenctl watch's last token
	lastKill, lastHup                 time.Time
}

type sample struct {
	at                   time.Time
	fds, goroutines, rss int
}

func newSoak(t *testing.T, seed uint64) *soak {
	s := &soak{t: t, rnd: rand.New(rand.NewPCG(seed, 1))}
	var err error
	// Not t.TempDir(): other uids must reach the socket.
	if s.dir, err = os.MkdirTemp("", "tokend-soak-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.dir) })
	os.Chmod(s.dir, 0o755)
	s.sock, s.sink, s.config = filepath.Join(s.dir, "tokend.sock"), filepath.Join(s.dir, "sink", "vibes.json"), filepath.Join(s.dir, "tokend.toml")
	os.Mkdir(filepath.Dir(s.sink), 0o755)
	// A tokend without the race detector, whose memory can be measured.
	_, s.tokenctl = daemontest.Binaries(t)
	s.tokend = filepath.Join(s.dir, "tokend")
	if out, err := exec.Command("go", "build", "-o", s.tokend, daemontest.Root("cmd/tokend")).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The socket is the test's, as systemd's is: tokend gets it by
	// activation, and it outlives every kill -9.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: s.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	os.Chmod(s.sock, 0o666)
	if s.listener, err = ln.File(); err != nil {
		t.Fatal(err)
	}
	s.vault = daemontest.StartVault(t)
	s.vault.PutSecret("tokend/vibes", "cid", "csecret")
	s.vault.Call("PUT", "sys/policies/acl/soak", map[string]any{"policy": `path "secret/data/tokend/vibes" { capabilities = ["read"] }`})
	s.tokFile = filepath.Join(s.dir, "vault-token")
	s.newVaultToken()
	daemontest.WaitFor(t, "the dev server's unseal key", 5*time.Second, func() bool {
		_, rest, ok := strings.Cut(s.vault.Proc.Out.String(), "Unseal Key: ")
		s.unseal, _, _ = strings.Cut(rest, "\n")
		s.unseal = strings.TrimSpace(s.unseal)
		return ok && s.unseal != ""
	})
	s.ep = newChaosEndpoint(t, seed)
	s.writeConfig(false)
	return s
}

func (s *soak) newVaultToken() {
	tok := s.vault.Call("POST", "auth/token/create", map[string]any{"policies": []string{"soak"}, "ttl": "1h"})["auth"].(map[string]any)["client_token"].(string)
	os.WriteFile(s.tokFile+".new", []byte(tok), 0o600)
	os.Rename(s.tokFile+".new", s.tokFile)
}

// writeConfig writes the configuration; alt changes what a reload may
// change while the keeper stays: the log level, and the allow list (the
// denied uid is on neither).
func (s *soak) writeConfig(alt bool) {
	cfg := daemontest.OneToken(s.vault.Addr, s.tokFile, s.ep.URL+"/oauth2/token")
	cfg.Socket = s.sock
	v := cfg.Vibes()
	v.CAFile = s.ep.caFile
	v.MinRemaining, v.RequestTimeout, v.RetryMax = soakMinRemaining.String(), "1s", "1s"
	v.MaxFetchesPerHour = 100000
	v.AllowUIDs = []int{uidListed}
	v.File, v.FileFormat, v.FileMode = s.sink, "json", "0640"
	cfg.LogLevel = "info"
	if alt {
		v.AllowUIDs = []int{4343, uidListed}
		cfg.LogLevel = "debug"
	}
	f, err := os.CreateTemp(s.dir, "cfg")
	if err != nil {
		s.t.Fatal(err)
	}
	f.WriteString(cfg.TOML())
	f.Close()
	os.Rename(f.Name(), s.config)
}

// start runs tokend on the test's socket, as systemd would after a crash.
func (s *soak) start() {
	// LISTEN_PID must be tokend's own pid: the shell's, which exec keeps.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" --config "$1"`, s.tokend, s.config)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=tokend.socket", "VAULT_ADDR=", "VAULT_TOKEN=")
	cmd.ExtraFiles = []*os.File{s.listener}
	cmd.Stdout, cmd.Stderr = &s.out, &s.out
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.proc, s.procDone = cmd, done
	s.mu.Unlock()
}

func (s *soak) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.Process.Pid
}

// since says how long ago the last kill -9 and SIGHUP were, for a
// violation's context.
func (s *soak) since() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("last kill -9 %v ago, last SIGHUP %v ago", time.Since(s.lastKill).Round(time.Millisecond), time.Since(s.lastHup).Round(time.Millisecond))
}

func (s *soak) violate(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.violations) < 50 {
		s.violations = append(s.violations, fmt.Sprintf(format, args...))
	}
}

// check is every served token's test: issued by the endpoint, with at
// least min_remaining left (less the slack) when the client got it.
func (s *soak) check(who, tok string, at time.Time) {
	exp, ok := s.ep.expiry(tok)
	switch {
	case !ok:
		s.violate("%s was served %q, which the endpoint never issued", who, tok)
	case exp.Sub(at) < soakMinRemaining-soakSlack:
		s.violate("%s was served a token with %v left (min_remaining %v)", who, exp.Sub(at).Round(time.Millisecond), soakMinRemaining)
	}
	s.served.Add(1)
}

func (s *soak) run(length time.Duration) {
	s.start()
	ctx, cancel := context.WithTimeout(context.Background(), length)
	defer cancel()
	var wg sync.WaitGroup
	goes := func(f func(ctx context.Context, rnd *rand.Rand)) {
		wg.Add(1)
		rnd := rand.New(rand.NewPCG(s.rnd.Uint64(), 2))
		go func() { defer wg.Done(); f(ctx, rnd) }()
	}
	for range 2 {
		goes(s.oneShot)
	}
	goes(s.pipelining)
	goes(s.connectAndRead)
	goes(s.tokenctlAs(0))
	goes(s.tokenctlAs(uidListed))
	goes(s.tokenctlAs(uidDenied))
	goes(s.watch)
	goes(s.tokenctlWatch)
	goes(s.sinkReader)
	goes(s.sampler)
	s.conduct(ctx, length)
	wg.Wait()
	s.mu.Lock()
	p, done := s.proc, s.procDone
	s.mu.Unlock()
	p.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.Process.Kill()
		s.violate("tokend did not stop on SIGTERM within 10 s")
	}
}

// conduct injects the faults the endpoint does not: kill -9 (in the first
// third, so that the rest measures one process), SIGHUP storms with
// configuration changes, Vault sealed and its token revoked.
func (s *soak) conduct(ctx context.Context, length time.Duration) {
	began := time.Now()
	s.steadyFrom = began
	alt := false
	for {
		s.mu.Lock()
		done := s.procDone
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-done:
			s.violate("tokend exited on its own")
			s.start()
			continue
		case <-time.After(time.Duration(500+s.rnd.IntN(2500)) * time.Millisecond):
		}
		// At least one kill -9, whatever the seed. Kills are 8 s apart at
		// least: a retrying client's promise is an answer across one
		// restart (a request may wait 5 s for the new process's first
		// token), not across two within that wait.
		forceKill := s.kills.Load() == 0 && time.Since(began) > length/4 && time.Since(began) < length/3
		s.mu.Lock()
		spaced := time.Since(s.lastKill) > 8*time.Second
		s.mu.Unlock()
		switch n := s.rnd.IntN(10); {
		case forceKill || n < 2 && spaced && (time.Since(began) < length/3 || os.Getenv("TOKEND_SOAK_KILLS") == "all"):
			s.mu.Lock()
			p, done := s.proc, s.procDone
			s.mu.Unlock()
			p.Process.Signal(syscall.SIGKILL)
			<-done
			s.kills.Add(1)
			s.mu.Lock()
			s.lastKill = time.Now()
			s.mu.Unlock()
			s.start()
			s.steadyFrom = time.Now()
		case n < 5:
			alt = !alt
			s.writeConfig(alt)
			for range 1 + s.rnd.IntN(5) {
				syscall.Kill(s.pid(), syscall.SIGHUP)
				s.hups.Add(1)
				s.mu.Lock()
				s.lastHup = time.Now()
				s.mu.Unlock()
				time.Sleep(time.Duration(s.rnd.IntN(50)) * time.Millisecond)
			}
		case n < 8:
			s.vault.Call("PUT", "sys/seal", nil)
			s.seals.Add(1)
			time.Sleep(time.Duration(200+s.rnd.IntN(1500)) * time.Millisecond)
			s.vault.Call("PUT", "sys/unseal", map[string]any{"key": s.unseal})
		default:
			old, _ := os.ReadFile(s.tokFile)
			s.vault.Call("POST", "auth/token/revoke", map[string]any{"token": string(old)})
			s.revokes.Add(1)
			time.Sleep(time.Duration(s.rnd.IntN(1000)) * time.Millisecond)
			s.newVaultToken()
		}
	}
}

// outcome records an answer from tokend: a token (checked), an ERR
// (unavailable, or denied for the denied uid), or none at all (lost).
func (s *soak) outcome(who string, tok string, err error, at time.Time) {
	var perr *proto.Error
	switch {
	case err == nil:
		s.check(who, tok, at)
	case asProto(err, &perr) && perr.Code == proto.CodeUnavailable:
		s.unavailable.Add(1)
	default:
		s.lost.Add(1)
		s.violate("%s got no answer: %v", who, err)
	}
}

func asProto(err error, p **proto.Error) bool {
	e, ok := err.(*proto.Error)
	if ok {
		*p = e
	}
	return ok
}

func pause(ctx context.Context, rnd *rand.Rand, most time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(rnd.Int64N(int64(most)))):
		return true
	}
}

func (s *soak) oneShot(ctx context.Context, rnd *rand.Rand) {
	c := proto.Client{Path: s.sock, Timeout: 20 * time.Second}
	for pause(ctx, rnd, 50*time.Millisecond) {
		tok, err := c.Do(context.Background(), "TOKEN")
		s.outcome("a one-shot client", tok, err, time.Now())
	}
}

// pipelining keeps a connection and sends three requests at a time; a
// batch cut by a kill is asked again on a new connection, once.
func (s *soak) pipelining(ctx context.Context, rnd *rand.Rand) {
	var conn net.Conn
	var r *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	batch := func() ([]string, error) {
		if conn == nil {
			c, err := net.Dial("unix", s.sock)
			if err != nil {
				return nil, err
			}
			conn, r = c, bufio.NewReader(c)
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(conn, "TOKEN\nHEADER\nPING\n"); err != nil {
			return nil, err
		}
		var lines []string
		for range 3 {
			l, err := r.ReadString('\n')
			if err != nil {
				return nil, err
			}
			lines = append(lines, strings.TrimSuffix(l, "\n"))
		}
		return lines, nil
	}
	for pause(ctx, rnd, 50*time.Millisecond) {
		lines, err := batch()
		first := err
		if err != nil {
			conn.Close()
			conn = nil
			lines, err = batch()
		}
		at := time.Now()
		if err != nil {
			s.lost.Add(1)
			s.violate("a pipelining client got no answer: %v, then after one retry: %v (%s)", first, err, s.since())
			if conn != nil {
				conn.Close()
				conn = nil
			}
			continue
		}
		for i, l := range lines[:2] {
			switch {
			case strings.HasPrefix(l, "OK "):
				tok := strings.TrimPrefix(l, "OK ")
				if i == 1 {
					tok = strings.TrimPrefix(tok, "Bearer ")
				}
				s.check("a pipelining client", tok, at)
			case strings.HasPrefix(l, "ERR unavailable "):
				s.unavailable.Add(1)
			default:
				s.violate("a pipelining client read %q", l)
			}
		}
		if lines[2] != "OK PONG" {
			s.violate("PING answered %q", lines[2])
		}
	}
}

// connectAndRead is LoadCredential='s way: nothing sent, the bare token
// read; nothing at all when there is none.
func (s *soak) connectAndRead(ctx context.Context, rnd *rand.Rand) {
	for pause(ctx, rnd, 100*time.Millisecond) {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: s.sock, Net: "unix"})
		if err != nil {
			s.lost.Add(1)
			s.violate("connect-and-read: %v", err)
			continue
		}
		c.CloseWrite()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		b, err := io.ReadAll(c)
		c.Close()
		switch {
		case err != nil:
			// A kill mid-answer: systemd's loader would fail the unit's
			// start and the unit be retried; not a silent wrong token.
			s.unavailable.Add(1)
		case len(b) == 0:
			s.unavailable.Add(1)
		default:
			s.check("a connect-and-read client", string(b), time.Now())
		}
	}
}

// tokenctlAs runs tokenctl as uid: root and the listed uid read tokens;
// the denied uid must be denied every time.
func (s *soak) tokenctlAs(uid int) func(context.Context, *rand.Rand) {
	return func(ctx context.Context, rnd *rand.Rand) {
		who := fmt.Sprintf("tokenctl as uid %d", uid)
		for pause(ctx, rnd, 300*time.Millisecond) {
			cmd := exec.Command(s.tokenctl, "--socket", s.sock, "get")
			if uid != 0 {
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
			}
			var out, errb strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errb
			// The token is judged as of the start: a process's start and
			// exit (a race-detector build, a loaded CI machine) can take
			// longer than the slack, and the answer came between the two.
			at := time.Now()
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			switch {
			case uid == uidDenied && code == 1 && strings.Contains(errb.String(), "denied"):
				s.denied.Add(1)
			case uid == uidDenied:
				s.violate("%s: exit %d %q %q, want denied", who, code, out.String(), errb.String())
			case code == 0:
				s.check(who, strings.TrimSpace(out.String()), at)
			case code == 1 && strings.Contains(errb.String(), "unavailable"):
				s.unavailable.Add(1)
			default:
				s.lost.Add(1)
				s.violate("%s: exit %d %q", who, code, errb.String())
			}
		}
	}
}

// watch follows the token with the Go client, which reconnects when
// tokend restarts.
func (s *soak) watch(ctx context.Context, _ *rand.Rand) {
	err := socket.Client{Path: s.sock}.Watch(ctx, "", func(tok socket.Token) {
		if tok.AccessToken != "" {
			s.check("a WATCH client", tok.AccessToken, time.Now())
		}
	})
	if err != nil && ctx.Err() == nil {
		s.violate("WATCH ended: %v", err)
	}
}

// tokenctlWatch runs `tokenctl watch`, which must print every token it
// prints at once, and keep printing across tokend's restarts.
func (s *soak) tokenctlWatch(ctx context.Context, _ *rand.Rand) {
	cmd := exec.CommandContext(ctx, s.tokenctl, "--socket", s.sock, "watch")
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.violate("tokenctl watch: %v", err)
		return
	}
	if err := cmd.Start(); err != nil {
		s.violate("tokenctl watch: %v", err)
		return
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		s.check("tokenctl watch", sc.Text(), time.Now())
		s.mu.Lock()
		s.watchLast = time.Now()
		s.mu.Unlock()
	}
	cmd.Wait()
}

// sinkReader reads the file sink as a tool would: when it exists it is a
// whole JSON answer with a token that has min_remaining left.
func (s *soak) sinkReader(ctx context.Context, rnd *rand.Rand) {
	for pause(ctx, rnd, 50*time.Millisecond) {
		b, err := os.ReadFile(s.sink)
		at := time.Now()
		if os.IsNotExist(err) {
			continue
		}
		var j proto.JSON
		if err != nil || json.Unmarshal(b, &j) != nil || j.AccessToken == "" {
			s.violate("the file sink held %q (%v)", b, err)
			continue
		}
		s.check("the file sink", j.AccessToken, at)
	}
}

// sampler measures tokend every second: open descriptors, goroutines
// (its own metrics), resident memory.
func (s *soak) sampler(ctx context.Context, _ *rand.Rand) {
	for pause(ctx, rand.New(rand.NewPCG(1, 1)), time.Second) {
		pid := s.pid()
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		rss := 0
		if _, rest, ok := strings.Cut(string(status), "VmRSS:"); ok {
			fmt.Sscan(rest, &rss)
		}
		text, err := proto.Client{Path: s.sock, Timeout: 5 * time.Second}.Metrics(context.Background())
		if err != nil {
			continue
		}
		g := 0
		for _, l := range strings.Split(string(text), "\n") {
			if v, ok := strings.CutPrefix(l, "go_goroutines "); ok {
				g, _ = strconv.Atoi(v)
			}
		}
		s.mu.Lock()
		if pid == s.proc.Process.Pid {
			s.samples = append(s.samples, sample{time.Now(), len(fds), g, rss})
		}
		s.mu.Unlock()
	}
}

func (s *soak) report(t *testing.T) {
	faults := s.ep.faultCounts()
	t.Logf("answers: %d tokens served and checked, %d unavailable, %d denied (uid %d), %d lost", s.served.Load(), s.unavailable.Load(), s.denied.Load(), uidDenied, s.lost.Load())
	t.Logf("token requests: %d, tokens issued: %d; faults injected by the endpoint: %v", s.ep.requests.Load(), len(s.ep.issued), faults)
	t.Logf("kill -9: %d, SIGHUP: %d, Vault sealed: %d, Vault token revoked: %d", s.kills.Load(), s.hups.Load(), s.seals.Load(), s.revokes.Load())
	var steady []sample
	for _, x := range s.samples {
		if x.at.After(s.steadyFrom.Add(2 * time.Second)) {
			steady = append(steady, x)
		}
	}
	if len(steady) >= 9 {
		third := len(steady) / 3
		first, last := peak(steady[:third]), peak(steady[len(steady)-third:])
		t.Logf("resources after the last kill (%d samples): first third max fds %d, goroutines %d, RSS %d kB; last third %d, %d, %d kB",
			len(steady), first.fds, first.goroutines, first.rss, last.fds, last.goroutines, last.rss)
		// Allowances: a few connections' worth of descriptors and
		// goroutines (the clients come and go), and the Go heap's slack.
		if last.fds > first.fds+16 || last.goroutines > first.goroutines+40 || last.rss > first.rss+16*1024 {
			t.Errorf("resources grew: fds %d→%d (allowance 16), goroutines %d→%d (40), RSS %d→%d kB (16 MB)",
				first.fds, last.fds, first.goroutines, last.goroutines, first.rss, last.rss)
		}
	} else {
		t.Errorf("only %d resource samples after the last kill: the soak is too short to judge", len(steady))
	}
	if !s.watchLast.After(s.steadyFrom) {
		t.Errorf("tokenctl watch printed no token after the last kill -9 (its last at %v, the kill at %v): it did not reconnect",
			s.watchLast.Format(time.TimeOnly), s.steadyFrom.Format(time.TimeOnly))
	}
	if s.served.Load() == 0 || s.denied.Load() == 0 {
		t.Errorf("nothing was served (%d) or denied (%d): the soak tested nothing", s.served.Load(), s.denied.Load())
	}
	for _, v := range s.violations {
		t.Error(v)
	}
	if t.Failed() {
		t.Logf("tokend's log (the end):\n%s", tail(s.out.String(), 60))
	}
}

func peak(xs []sample) sample {
	var p sample
	for _, x := range xs {
		p.fds, p.goroutines, p.rss = max(p.fds, x.fds), max(p.goroutines, x.goroutines), max(p.rss, x.rss)
	}
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// chaosEndpoint is a token endpoint over TLS that switches, at random
// every fraction of a second, between answering and failing in every way
// tokend handles. It records every token it issues and when it expires.
type chaosEndpoint struct {
	*httptest.Server
	caFile   string
	mu       sync.Mutex
	mode     string
	issued   map[string]time.Time
	faults   map[string]int
	requests atomic.Int64
}

var chaosModes = []string{"ok", "ok", "ok", "ok", "ok", "slow", "503", "429", "html", "no-token", "hang", "reset"}

func newChaosEndpoint(t *testing.T, seed uint64) *chaosEndpoint {
	e := &chaosEndpoint{mode: "ok", issued: map[string]time.Time{}, faults: map[string]int{}}
	e.Server = httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	e.Server.StartTLS()
	t.Cleanup(e.Server.Close)
	e.caFile = filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(e.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.Certificate().Raw}), 0o644)
	rnd := rand.New(rand.NewPCG(seed, 3))
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+rnd.IntN(500)) * time.Millisecond):
			}
			e.mu.Lock()
			e.mode = chaosModes[rnd.IntN(len(chaosModes))]
			e.mu.Unlock()
		}
	}()
	return e
}

func (e *chaosEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	e.requests.Add(1)
	e.mu.Lock()
	mode := e.mode
	if mode != "ok" {
		e.faults[mode]++
	}
	e.mu.Unlock()
	if id, pw, ok := r.BasicAuth(); !ok || id != "cid" || pw != "csecret" {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client"}`)
		return
	}
	switch mode {
	case "slow":
		time.Sleep(300 * time.Millisecond)
	case "503":
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(503)
		io.WriteString(w, `{"error":"temporarily_unavailable"}`)
		return
	case "429":
		w.WriteHeader(429)
		io.WriteString(w, `{"error":"slow_down"}`)
		return
	case "html":
		w.WriteHeader(502)
		io.WriteString(w, "<html><body>Bad Gateway</body></html>")
		return
	case "no-token":
		io.WriteString(w, `{"token_type":"Bearer","expires_in":4}`)
		return
	case "hang":
		time.Sleep(2 * time.Second) // past request_timeout (1s)
		w.WriteHeader(504)
		return
	case "reset":
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			if tc, ok := c.(*tls.Conn); ok {
				tc.NetConn().(*net.TCPConn).SetLinger(0) // a reset, not a close
			}
			c.Close()
		}
		return
	}
	e.mu.Lock()
	tok := fmt.Sprintf("soak-%d", len(e.issued)+1)
	e.issued[tok] = time.Now().Add(soakTTL)
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d}`, tok, int(soakTTL/time.Second))
}

func (e *chaosEndpoint) expiry(tok string) (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.issued[tok]
	return t, ok
}

func (e *chaosEndpoint) faultCounts() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, v := range e.faults {
		out[k] = v
	}
	return out
}
