package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/daemon/daemontest"
)

// One uid holds its 64 slots and loops non-blocking connects (each
// refused by its per-uid cap): another uid's tokenctl, measured before
// and during the flood in the same run, is still answered, and not
// much slower. (Before the fix, 14 of 15 such requests failed with
// "resource temporarily unavailable": refusals slowed the accept loop
// and the listen backlog filled. It may still fill for moments under
// such a flood, on a race-built tokend most: clients try a connect that
// met a full backlog again, for up to 2 s.)
func TestE2EFloodOtherUID(t *testing.T) {
	if os.Getuid() != 0 {
		daemontest.Need(t, "root", "running clients as other uids needs root")
	}
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		daemontest.Need(t, python, "apt-get install python3")
	}
	// A race-built tokenctl sleeps a second at exit (the race
	// detector's atexit_sleep_ms): not what is measured here.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	ep := daemontest.NewEndpoint(t, "basic+body", "cid", "csecret")
	cfg := daemontest.StandInConfig(t, ep)
	cfg.SocketMode = "0666"
	d := daemontest.StartTokend(t, cfg)
	tok := d.Token()
	victim := &syscall.Credential{Uid: 4343, Gid: 4343}
	measure := func(n int) (lat []time.Duration, failed int, first string) {
		for range n {
			start := time.Now()
			got, errs, code := d.CtlAs(victim, "get")
			lat = append(lat, time.Since(start))
			if code != 0 || got != tok {
				failed++
				if first == "" {
					first = strings.TrimSpace(errs)
				}
			}
		}
		slices.Sort(lat)
		return lat, failed, first
	}
	base, baseFailed, _ := measure(20)

	const flooder = `
import socket, sys, time
held = []
for i in range(64):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    held.append(s)
end, n, refused = time.time() + float(sys.argv[2]), 0, 0
while time.time() < end:
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
        n += 1
    except OSError:
        refused += 1
    s.close()
print(n, refused)
`
	cmd := exec.Command(python, "-c", flooder, d.Sock, "8")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4242, Gid: 4242}}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the flood is under way
	flood, floodFailed, first := measure(20)
	cmd.Wait()
	p := func(l []time.Duration, q int) time.Duration { return l[len(l)*q/100].Round(100 * time.Microsecond) }
	t.Logf("uid 4343's tokenctl get, 20 each: before the flood median %s p95 %s (%d failed); during uid 4242's flood median %s p95 %s (%d failed); the flooder's connects (accepted, refused at connect): %s",
		p(base, 50), p(base, 95), baseFailed, p(flood, 50), p(flood, 95), floodFailed, strings.TrimSpace(out.String()))
	if floodFailed > 0 || baseFailed > 0 {
		t.Errorf("%d requests failed during the flood (%d before); first: %s", floodFailed, baseFailed, first)
	}
	if p(flood, 50) > p(base, 50)+time.Second {
		t.Errorf("during the flood the median request took %s, %s before", p(flood, 50), p(base, 50))
	}
}
