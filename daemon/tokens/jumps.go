package tokens

import (
	"sync"
	"time"
)

// clockJumps watches, for every keeper of the process, whether the wall
// clock moves away from the monotonic one: it compares how far each
// advanced every two seconds. A suspend shows as a jump forward; a clock
// step as either.
var clockJumps jumpWatch

type jumpWatch struct {
	once sync.Once
	mu   sync.Mutex
	ch   chan struct{}
}

// next is the channel closed at the next jump.
func (w *jumpWatch) next() <-chan struct{} {
	w.once.Do(func() {
		w.ch = make(chan struct{})
		go w.watch(2*time.Second, time.Second)
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

func (w *jumpWatch) watch(every, tolerance time.Duration) {
	prev := time.Now()
	for {
		time.Sleep(every)
		now := time.Now()
		mono, wall := now.Sub(prev), now.Round(0).Sub(prev.Round(0))
		if wall-mono > tolerance || mono-wall > tolerance {
			w.mu.Lock()
			close(w.ch)
			w.ch = make(chan struct{})
			w.mu.Unlock()
		}
		prev = now
	}
}
