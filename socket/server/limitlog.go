package server

import (
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// LimitedLog logs a warning that clients can provoke (busy refusals,
// denied peers, connect-and-read clients that get nothing) at most once
// per interval and kind: the first after a quiet interval at once, with
// its details; the rest summed per uid into one line at the interval's
// end. A flood of clients must not flood the log too.
type LimitedLog struct {
	interval time.Duration // default 10s

	mu    sync.Mutex
	kinds map[string]*pendingLog
}

type pendingLog struct {
	last  time.Time
	byUID map[uint32]int
	total int
	flush *time.Timer
}

// maxUIDsLogged bounds the per-uid counts in one summary line.
const maxUIDsLogged = 10

// Warn counts one event of kind msg by uid. detail adds the first event's
// fields when it is logged at once.
func (l *LimitedLog) Warn(log zerolog.Logger, msg string, uid uint32, detail func(*zerolog.Event) *zerolog.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.interval <= 0 {
		l.interval = 10 * time.Second
	}
	if l.kinds == nil {
		l.kinds = map[string]*pendingLog{}
	}
	p := l.kinds[msg]
	if p == nil {
		p = &pendingLog{byUID: map[uint32]int{}}
		l.kinds[msg] = p
	}
	if wait := l.interval - time.Since(p.last); wait > 0 {
		p.byUID[uid]++
		p.total++
		if p.flush == nil {
			p.flush = time.AfterFunc(wait, func() {
				l.mu.Lock()
				defer l.mu.Unlock()
				p.flush = nil
				p.report(log, msg)
			})
		}
		return
	}
	p.last = time.Now()
	detail(log.Warn().Uint32("uid", uid).Int("count", 1)).Msg(msg)
}

// report logs the events counted since the last line; l.mu is held.
func (p *pendingLog) report(log zerolog.Logger, msg string) {
	if p.total == 0 {
		return
	}
	// The uids with the most events first, a bounded number of them.
	uids := slices.SortedFunc(maps.Keys(p.byUID), func(a, b uint32) int { return p.byUID[b] - p.byUID[a] })
	d := zerolog.Dict()
	for _, u := range uids[:min(len(uids), maxUIDsLogged)] {
		d.Int(strconv.FormatUint(uint64(u), 10), p.byUID[u])
	}
	log.Warn().Int("count", p.total).Int("uids", len(uids)).Dict("by_uid", d).Msg(msg)
	p.total, p.last = 0, time.Now()
	clear(p.byUID)
}
