package tokens

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tokend/tokend/daemon/config"
	"github.com/tokend/tokend/daemon/oauth"
)

// The fleet simulation: 10,000 hosts with 1-hour tokens over 48 hours, in
// per-host mode and shared mode (share_path), on a fake clock. The hosts
// run the keeper's own policy: refreshAfter and retryDelay in per-host
// mode, and the sharer's step in shared mode, against an in-memory KV v2
// entry with Vault's check-and-set rules and a token endpoint that counts
// requests. Vault and the endpoint answer instantly; races that need
// latency are the 8-process test's job (cmd/tokend). Deterministic: every
// host draws from its own seeded generator.
//
//	go test -run TestFleetSimulation -v ./daemon/
//
// prints the table docs/sharing.md shows.

const (
	fleetHosts    = 10000
	fleetLifetime = time.Hour
	fleetRun      = 48 * time.Hour
	fleetOutage   = 10 * time.Minute
)

var fleetStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fleetEvents are the three events, and where the outages fall.
type fleetEvents struct {
	name string
	// endpointAt: the token endpoint's outage begins here, or, when
	// atNextRequest, at the first request on or after it (for shared
	// mode: the shared token's due point, the worst moment).
	endpointAt    time.Duration
	atNextRequest bool
	vaultAt       time.Duration // Vault's outage: at the first read on or after it
}

type fleetHost struct {
	id       int
	rnd      *rand.Rand
	sh       *sharer
	mine     *shared
	failures int
	gapFrom  time.Time // when the host last fell under min_remaining with nothing newer; zero: it did not
}

// fleetShape is a simulation's fleet and settings.
type fleetShape struct {
	size             int
	lifetime, length time.Duration
	outage           time.Duration // each outage's length
	startSpread      time.Duration // hosts start within this
	policy           sharePolicy
}

// defaultShape is the 10,000-host fleet with the default settings.
var defaultShape = fleetShape{size: fleetHosts, lifetime: fleetLifetime, length: fleetRun, outage: fleetOutage, startSpread: time.Minute,
	policy: newSharePolicy(config.DefaultMinRemaining, config.DefaultRequestTimeout, config.DefaultRetryMax)}

type fleetSim struct {
	fleetShape
	shared   bool
	ev       fleetEvents
	now      time.Time
	hosts    []*fleetHost
	queue    fleetQueue
	store    *memStore
	epFrom   time.Time // the endpoint outage; zero until it begins
	vaultOn  bool      // the Vault outage began
	requests map[int64]int
	issued   map[int64]int // successful requests per hour
	tokens   int
	vaultOps map[int64]int // Vault reads and writes per second
	// Hosts ever without a servable token after their first, and when.
	gaps      map[int]time.Time
	gapLonger time.Duration
	gapTotal  time.Duration // summed over hosts
	fallbacks int
	failed    map[int]bool // hosts that had a token request fail
}

func (s *fleetSim) endpointDown() bool {
	if at := fleetStart.Add(s.ev.endpointAt); s.epFrom.IsZero() && !s.now.Before(at) {
		s.epFrom = at
		if s.ev.atNextRequest {
			s.epFrom = s.now
		}
	}
	return !s.epFrom.IsZero() && s.now.Before(s.epFrom.Add(s.outage))
}

func (s *fleetSim) vaultDown() bool {
	at := fleetStart.Add(s.ev.vaultAt)
	if !s.vaultOn && !s.now.Before(at) {
		s.vaultOn = true
		s.ev.vaultAt = s.now.Sub(fleetStart) // begins at the first read on or after vaultAt
	}
	return s.vaultOn && s.now.Before(fleetStart.Add(s.ev.vaultAt+s.outage))
}

// fleetStore is the in-memory entry, down during the Vault outage.
type fleetStore struct{ s *fleetSim }

func (f fleetStore) ReadEntry(ctx context.Context, mount, path string) (map[string]string, int, error) {
	f.s.vaultOps[f.s.now.Unix()]++
	f.s.store.down = f.s.vaultDown()
	return f.s.store.ReadEntry(ctx, mount, path)
}

func (f fleetStore) WriteEntry(ctx context.Context, mount, path string, fields map[string]string, cas int) (int, error) {
	f.s.vaultOps[f.s.now.Unix()]++
	f.s.store.down = f.s.vaultDown()
	return f.s.store.WriteEntry(ctx, mount, path, fields, cas)
}

func (s *fleetSim) fetch(ctx context.Context, cached bool) (oauth.Grant, time.Time, error) {
	s.requests[s.now.Unix()]++
	if s.endpointDown() {
		return oauth.Grant{}, s.now, &oauth.EndpointError{Status: http.StatusServiceUnavailable}
	}
	s.issued[int64(s.now.Sub(fleetStart)/time.Hour)]++
	s.tokens++
	return oauth.Grant{AccessToken: fmt.Sprintf("t%d", s.tokens), TokenType: "Bearer", Lifetime: s.lifetime}, s.now, nil
}

func newFleetSim(sharedMode bool, ev fleetEvents, shape fleetShape) *fleetSim {
	s := &fleetSim{fleetShape: shape, shared: sharedMode, ev: ev, now: fleetStart, store: &memStore{},
		requests: map[int64]int{}, issued: map[int64]int{}, vaultOps: map[int64]int{}, gaps: map[int]time.Time{}, failed: map[int]bool{}}
	for i := range s.size {
		h := &fleetHost{id: i, rnd: rand.New(rand.NewPCG(uint64(i), 42))}
		if sharedMode {
			h.sh = &sharer{mount: "secret", path: "tokend/shared/vibes", id: fmt.Sprint("host", i), config: "c", scope: "s",
				policy: s.policy, store: fleetStore{s}, rand: h.rnd.Float64, jitter: h.rnd.Float64(), log: zerolog.Nop(),
				obs: fleetObserver{s}}
		}
		s.hosts = append(s.hosts, h)
		heap.Push(&s.queue, fleetEvent{at: fleetStart.Add(time.Duration(h.rnd.Float64() * float64(s.startSpread))), host: i})
	}
	return s
}

func (s *fleetSim) run() {
	end := fleetStart.Add(s.length)
	for s.queue.Len() > 0 {
		e := heap.Pop(&s.queue).(fleetEvent)
		if e.at.After(end) {
			break
		}
		s.now = e.at
		h := s.hosts[e.host]
		s.checkGap(h)
		next := s.step(h)
		heap.Push(&s.queue, fleetEvent{at: next, host: h.id})
	}
	s.now = end
	for _, h := range s.hosts {
		s.checkGap(h)
		if !h.gapFrom.IsZero() {
			s.gapTotal += end.Sub(h.gapFrom)
		}
	}
}

// checkGap notes a host whose token fell under min_remaining before now.
func (s *fleetSim) checkGap(h *fleetHost) {
	if h.mine == nil || h.gapFrom.IsZero() && s.now.Before(h.mine.ExpiresAt.Add(-s.policy.minRemaining)) {
		return
	}
	if h.gapFrom.IsZero() {
		h.gapFrom = h.mine.ExpiresAt.Add(-s.policy.minRemaining)
	}
	if _, ok := s.gaps[h.id]; !ok {
		s.gaps[h.id] = h.gapFrom
	}
}

func (s *fleetSim) take(h *fleetHost, t *shared) {
	s.checkGap(h)
	if !h.gapFrom.IsZero() {
		s.gapLonger = max(s.gapLonger, s.now.Sub(h.gapFrom))
		s.gapTotal += s.now.Sub(h.gapFrom)
		h.gapFrom = time.Time{}
	}
	h.mine, h.failures = t, 0
}

// step is one keeper attempt of host h; it returns when the next is due.
func (s *fleetSim) step(h *fleetHost) time.Time {
	failed := func(err error) time.Time {
		s.failed[h.id] = true
		h.failures++
		return s.now.Add(retryDelay(h.failures, s.policy.retryMax, 0, h.rnd.Float64()))
	}
	if !s.shared || !s.policy.fits(s.lifetime) {
		// Alone, or sharing tokens too short to share: the keeper then
		// fetches on its own schedule (shareFits).
		g, sent, err := s.fetch(context.Background(), false)
		if err != nil {
			return failed(err)
		}
		s.take(h, &shared{Token: g.AccessToken, FetchedAt: sent, ExpiresAt: sent.Add(g.Lifetime)})
		return sent.Add(refreshAfter(g.Lifetime, s.policy.minRemaining, s.policy.timeout, h.rnd.Float64()))
	}
	r := h.sh.step(context.Background(), s.now, h.mine, false, s.fetch)
	if r.err != nil {
		return failed(r.err)
	}
	if r.tok != nil {
		s.take(h, r.tok)
	}
	return r.next
}

// report is one mode's row.
type fleetReport struct {
	perHour, perLifetime               float64 // steady state: hours 2 to 11
	peakStart, peakVault, peakRecovery int     // requests per second
	recovery                           int     // requests in the 10 minutes after the endpoint outage
	gapsEndpoint, gapsVault            int     // hosts ever without a servable token, by event
	gapsOther                          int
	longestGap                         time.Duration
	vaultPeak                          int // Vault requests per second
	failedHosts                        int // hosts that had a token request fail
	fallbacks                          int
}

func (s *fleetSim) report() fleetReport {
	var r fleetReport
	// Steady state: from the second hour on, leaving out the three hours
	// from each outage's start.
	steady, hours := 0, 0
	for hr := int64(1); hr < int64(s.length/time.Hour); hr++ {
		at := fleetStart.Add(time.Duration(hr) * time.Hour)
		if s.near(at, s.epFrom) || s.near(at, fleetStart.Add(s.ev.vaultAt)) {
			continue
		}
		steady += s.issued[hr]
		hours++
	}
	r.perHour = float64(steady) / float64(hours)
	r.perLifetime = r.perHour * float64(s.lifetime) / float64(time.Hour)
	epEnd := s.epFrom.Add(s.outage)
	for sec, n := range s.requests {
		at := time.Unix(sec, 0)
		if vFrom := fleetStart.Add(s.ev.vaultAt); !at.Before(vFrom) && at.Before(vFrom.Add(s.outage)) {
			r.peakVault = max(r.peakVault, n)
		}
		if at.Before(fleetStart.Add(10 * time.Minute)) {
			r.peakStart = max(r.peakStart, n)
		}
		if !at.Before(epEnd) && at.Before(epEnd.Add(10*time.Minute)) {
			r.recovery += n
			r.peakRecovery = max(r.peakRecovery, n)
		}
	}
	for _, n := range s.vaultOps {
		r.vaultPeak = max(r.vaultPeak, n)
	}
	vFrom := fleetStart.Add(s.ev.vaultAt)
	for _, at := range s.gaps {
		switch {
		case !at.Before(s.epFrom) && at.Before(epEnd):
			r.gapsEndpoint++
		case !at.Before(vFrom) && at.Before(vFrom.Add(s.outage+time.Minute)):
			r.gapsVault++
		default:
			r.gapsOther++
		}
	}
	r.longestGap = s.gapLonger
	r.fallbacks = s.fallbacks
	r.failedHosts = len(s.failed)
	return r
}

// near reports whether the hour starting at hr overlaps the three hours
// from an event at ev.
func (s *fleetSim) near(hr, ev time.Time) bool {
	return hr.Add(time.Hour).After(ev) && hr.Before(ev.Add(3*time.Hour))
}

func TestFleetSimulation(t *testing.T) {
	if testing.Short() || raceOn {
		// Single-threaded: the race detector has nothing to find, and
		// would make it take minutes. .ci/test runs it without.
		t.Skip("SKIPPED: the fleet simulation runs without -race and -short (.ci/test does)")
	}
	scenarios := []fleetEvents{
		{name: "endpoint down at 12:00", endpointAt: 12 * time.Hour, vaultAt: 30 * time.Hour},
		{name: "endpoint down at its first request after 12:00", endpointAt: 12 * time.Hour, atNextRequest: true, vaultAt: 30 * time.Hour},
	}
	var table strings.Builder
	table.WriteString("| events | mode | tokens/hour | tokens per lifetime: fleet / host | peak req/s: start / Vault outage / endpoint recovery | requests in recovery | hosts ever without a token: endpoint outage / Vault outage / otherwise | longest gap | fallbacks | peak Vault req/s |\n")
	table.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, ev := range scenarios {
		for _, mode := range []bool{false, true} {
			s := newFleetSim(mode, ev, defaultShape)
			s.run()
			r := s.report()
			name := "per-host"
			if mode {
				name = "shared"
			}
			fmt.Fprintf(&table, "| %s | %s | %.1f | %.3f / %.3f | %d / %d / %d | %d | %d / %d / %d | %s | %d | %d |\n", ev.name, name,
				r.perHour, r.perLifetime, r.perLifetime/fleetHosts, r.peakStart, r.peakVault, r.peakRecovery, r.recovery, r.gapsEndpoint, r.gapsVault, r.gapsOther,
				r.longestGap.Round(time.Second), r.fallbacks, r.vaultPeak)
			t.Logf("%s, %s: %d hosts had a token request fail", ev.name, name, r.failedHosts)
			if mode {
				// The targets: about one token per lifetime, and sharing
				// never the reason a host has no token.
				if r.perLifetime > 1.05 {
					t.Errorf("%s, shared: %.3f tokens per lifetime, want <= 1.05", ev.name, r.perLifetime)
				}
				if r.gapsVault != 0 || r.gapsOther != 0 {
					t.Errorf("%s, shared: hosts without a token in the Vault outage (%d) or otherwise (%d)", ev.name, r.gapsVault, r.gapsOther)
				}
			} else {
				// Per-host mode's recovery peak is bounded by the backoff's
				// jitter: a host waits uniformly up to retry_max, so at
				// most about 1/30 of the waiting hosts ask in any second.
				bound := fleetHosts/int(config.DefaultRetryMax/time.Second)*3/2 + 10
				if r.peakRecovery > bound {
					t.Errorf("%s, per-host: recovery peak %d req/s, want <= %d", ev.name, r.peakRecovery, bound)
				}
				if r.gapsVault+r.gapsOther != 0 {
					t.Errorf("%s, per-host: hosts without a token outside the endpoint outage: %d", ev.name, r.gapsVault+r.gapsOther)
				}
			}
		}
	}
	t.Logf("fleet of %d hosts, %s tokens, %s, defaults (min_remaining %s, request_timeout %s, retry_max %s):\n%s",
		fleetHosts, fleetLifetime, fleetRun, config.DefaultMinRemaining, config.DefaultRequestTimeout, config.DefaultRetryMax, table.String())
}

type fleetEvent struct {
	at   time.Time
	host int
}

// fleetQueue is a min-heap of events by time, then host: deterministic.
type fleetQueue []fleetEvent

func (q fleetQueue) Len() int { return len(q) }
func (q fleetQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].host < q[j].host
}
func (q fleetQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *fleetQueue) Push(x any)   { *q = append(*q, x.(fleetEvent)) }
func (q *fleetQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// fleetObserver counts the fleet's fallbacks.
type fleetObserver struct{ s *fleetSim }

func (fleetObserver) Attempted()                    {}
func (fleetObserver) Fetched(string, time.Duration) {}
func (fleetObserver) ShareRead(string)              {}
func (fleetObserver) ShareLeased()                  {}
func (o fleetObserver) FellBack()                   { o.s.fallbacks++ }

// TestFleetGrid holds sharing to its promise over a grid of settings:
// with the token endpoint up, a sharing host is never without a servable
// token where it would have one alone, whatever the tokens' lifetime,
// min_remaining, request_timeout and retry_max, through a Vault outage
// of one lifetime. (An endpoint outage that begins at the shared token's
// due point is sharing's documented price: docs/sharing.md.) 50 hosts,
// 10 lifetimes per cell; Vault and the endpoint answer instantly here,
// and cmd/tokend's TestE2ESharedGrid runs real processes with latency.
func TestFleetGrid(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIPPED: the fleet grid runs without -short (.ci/test does)")
	}
	cells, unfit, aloneGaps, never := 0, 0, 0, 0
	for _, lifetime := range []time.Duration{3 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour} {
		for _, minRemaining := range []time.Duration{0, 500 * time.Millisecond, 2 * time.Second, 10 * time.Second, time.Minute, 5 * time.Minute} {
			for _, timeout := range []time.Duration{100 * time.Millisecond, time.Second, 10 * time.Second, time.Minute} {
				for _, retryMax := range []time.Duration{time.Second, 30 * time.Second} {
					if minRemaining >= lifetime {
						// No token is ever servable, alone or shared:
						// the keeper reports it as an error.
						never++
						continue
					}
					shape := fleetShape{size: 50, lifetime: lifetime, length: 10 * lifetime, outage: lifetime,
						startSpread: lifetime / 4, policy: newSharePolicy(minRemaining, timeout, retryMax)}
					// The endpoint stays up; Vault is down from the third
					// lifetime's first read for one lifetime.
					ev := fleetEvents{name: "vault outage", endpointAt: 100 * lifetime, vaultAt: 3 * lifetime}
					alone, shared := newFleetSim(false, ev, shape), newFleetSim(true, ev, shape)
					alone.run()
					shared.run()
					cells++
					if !shape.policy.fits(lifetime) {
						unfit++
					}
					if alone.gapTotal > 0 {
						aloneGaps++
					}
					if shared.gapTotal > alone.gapTotal {
						t.Errorf("lifetime %s, min_remaining %s, request_timeout %s, retry_max %s: sharing hosts were without a servable token for %s in all (%d hosts, longest %s), hosts alone for %s",
							lifetime, minRemaining, timeout, retryMax, shared.gapTotal, len(shared.gaps), shared.gapLonger, alone.gapTotal)
					}
				}
			}
		}
	}
	t.Logf("%d settings: sharing no less available than alone in each; %d with tokens too short to share (fetched alone); %d where hosts alone had gaps too; %d left out (min_remaining >= the lifetime: no token is ever servable)",
		cells, unfit, aloneGaps, never)
}
