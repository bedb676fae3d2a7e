// Command tokend-load measures tokend's read path against the floor of its
// transport: a bare Unix-socket line echo server (same framing, a fixed
// answer, its own process), measured in the same run, in alternating
// rounds. It starts the real tokend binary on a token it obtains from
// stand-ins for Vault and the token endpoint served by this process (off
// the measured path: the token lives an hour), and prints a table:
//
//	go build -o /tmp/ ./cmd/tokend ./cmd/tokend-load
//	/tmp/tokend-load -tokend /tmp/tokend -conns 64 -duration 2s -rounds 5
package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-serve-echo" {
		serveEcho(os.Args[2])
		return
	}
	tokend := flag.String("tokend", "tokend", "the tokend binary to measure")
	conns := flag.Int("conns", 64, "concurrent clients")
	duration := flag.Duration("duration", 2*time.Second, "length of each measurement")
	rounds := flag.Int("rounds", 5, "alternating rounds of each measurement")
	flag.Parse()
	if err := run(*tokend, *conns, *duration, *rounds); err != nil {
		fmt.Fprintf(os.Stderr, "tokend-load: %v\n", err)
		os.Exit(1)
	}
}

// serveEcho is the baseline: read a line, answer a fixed line, as tokend
// answers TOKEN, with the same buffering.
func serveEcho(path string) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	answer := []byte("OK " + token + "\n")
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r, w := bufio.NewReaderSize(c, 1026), bufio.NewWriter(c)
			for {
				if _, err := r.ReadSlice('\n'); err != nil {
					return
				}
				w.Write(answer)
				if r.Buffered() == 0 && w.Flush() != nil {
					return
				}
			}
		}()
	}
}

// token is what both servers answer: the length of a typical JWT.
var token = "eyJ" + strings.Repeat("x", 800)

func run(tokendBin string, conns int, duration time.Duration, rounds int) error {
	dir, err := os.MkdirTemp("", "tokend-load-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	standIns, err := startStandIns()
	if err != nil {
		return err
	}
	defer standIns.Close()
	addr := "http://" + standIns.Addr().String()
	os.WriteFile(filepath.Join(dir, "vault-token"), []byte("load"), 0o600)
	cfg := fmt.Sprintf("socket = %q\nlog_level = \"error\"\nmax_connections = 4096\nmax_connections_per_uid = 4096\n"+
		"[vault]\naddress = %q\ntoken_file = %q\n[token.load]\ntoken_url = %q\nkv_path = \"load\"\n",
		filepath.Join(dir, "tokend.sock"), addr, filepath.Join(dir, "vault-token"), addr+"/oauth2/token")
	os.WriteFile(filepath.Join(dir, "tokend.toml"), []byte(cfg), 0o600)

	self, _ := os.Executable()
	servers := []*server{
		{name: "echo (baseline)", sock: filepath.Join(dir, "echo.sock"), cmd: exec.Command(self, "-serve-echo", filepath.Join(dir, "echo.sock"))},
		{name: "tokend", sock: filepath.Join(dir, "tokend.sock"), cmd: exec.Command(tokendBin, "--config", filepath.Join(dir, "tokend.toml"))},
	}
	for _, s := range servers {
		s.cmd.Env = append(os.Environ(), "VAULT_ADDR=", "VAULT_TOKEN=")
		s.cmd.Stderr = os.Stderr
		if err := s.cmd.Start(); err != nil {
			return err
		}
		defer func() { s.cmd.Process.Kill(); s.cmd.Wait() }()
		if err := s.waitReady(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}

	modes := []struct {
		name    string
		oneShot bool
	}{{"keep-alive", false}, {"one-shot", true}}
	results := map[string][]result{}
	for r := 0; r < rounds; r++ {
		for _, m := range modes {
			for _, s := range servers {
				res, err := measure(s.sock, conns, duration, m.oneShot)
				if err != nil {
					return fmt.Errorf("%s %s: %w", s.name, m.name, err)
				}
				results[m.name+"/"+s.name] = append(results[m.name+"/"+s.name], res)
			}
		}
	}

	fmt.Printf("%d clients, %d rounds of %v each, medians; ratios are tokend/echo (throughput: higher is better)\n\n", conns, rounds, duration)
	fmt.Printf("%-12s %-16s %12s %10s %10s %8s %8s\n", "mode", "server", "req/s", "p50", "p99", "ratio", "p99 ×")
	for _, m := range modes {
		base := median(results[m.name+"/"+servers[0].name])
		for _, s := range servers {
			all := results[m.name+"/"+s.name]
			med := median(all)
			lo, hi := spread(all, base.rate)
			fmt.Printf("%-12s %-16s %12.0f %10v %10v %8.2f %8.2f   (ratio %.2f–%.2f over rounds)\n", m.name, s.name, med.rate,
				med.p50.Round(time.Microsecond), med.p99.Round(time.Microsecond), med.rate/base.rate, float64(med.p99)/float64(base.p99), lo, hi)
		}
	}
	fmt.Println()
	for _, s := range servers {
		fmt.Printf("%-16s peak RSS %s\n", s.name, peakRSS(s.cmd.Process.Pid))
	}
	return nil
}

type server struct {
	name, sock string
	cmd        *exec.Cmd
}

func (s *server) waitReady() error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", s.sock); err == nil {
			fmt.Fprint(c, "TOKEN\n")
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if line == "OK "+token+"\n" {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("no token answered within 15s")
}

type result struct {
	rate     float64 // requests per second
	p50, p99 time.Duration
}

// measure runs conns clients asking TOKEN for d, on kept-alive
// connections or a new connection per request.
func measure(sock string, conns int, d time.Duration, oneShot bool) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	want := "OK " + token + "\n"
	var (
		total    atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		firstErr error
		wg       sync.WaitGroup
	)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			req, buf := []byte("TOKEN\n"), make([]byte, len(want))
			var c net.Conn
			var err error
			for ctx.Err() == nil {
				start := time.Now()
				if c == nil {
					if c, err = net.Dial("unix", sock); err != nil {
						break
					}
				}
				if _, err = c.Write(req); err == nil {
					_, err = io.ReadFull(c, buf)
				}
				if err == nil && string(buf) != want {
					err = fmt.Errorf("answer %.40q", buf)
				}
				if err != nil {
					break
				}
				mine = append(mine, time.Since(start))
				if oneShot {
					c.Close()
					c = nil
				}
			}
			if c != nil {
				c.Close()
			}
			mu.Lock()
			lat = append(lat, mine...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			total.Add(int64(len(mine)))
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return result{}, firstErr
	}
	slices.Sort(lat)
	if len(lat) == 0 {
		return result{}, errors.New("no answers")
	}
	return result{rate: float64(total.Load()) / d.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}, nil
}

func median(rs []result) result {
	rates := make([]result, len(rs))
	copy(rates, rs)
	slices.SortFunc(rates, func(a, b result) int { return cmp.Compare(a.rate, b.rate) })
	return rates[len(rates)/2]
}

func spread(rs []result, base float64) (lo, hi float64) {
	lo, hi = 1e9, 0
	for _, r := range rs {
		lo, hi = min(lo, r.rate/base), max(hi, r.rate/base)
	}
	return lo, hi
}

func peakRSS(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	return "?"
}

// startStandIns serves a Vault KV v2 read and a token endpoint that hands
// out the fixed token for an hour.
func startStandIns() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v1/auth/token/lookup-self":
			fmt.Fprint(w, `{"data":{"ttl":0,"renewable":false}}`)
		case strings.HasPrefix(r.URL.Path, "/v1/secret/data/"):
			fmt.Fprint(w, `{"data":{"data":{"client_id":"load","client_secret":"load"},"metadata":{"version":1}}}`)
		case r.URL.Path == "/oauth2/token":
			fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, token)
		default:
			w.WriteHeader(404)
		}
	}))
	return ln, nil
}
