package tokens

import (
	"testing"
	"time"
)

func TestRefreshAfter(t *testing.T) {
	tests := []struct {
		name                      string
		lifetime, minRem, timeout time.Duration
		lo, hi                    time.Duration
	}{
		{"hour", time.Hour, time.Minute, 10 * time.Second, 45 * time.Minute, 48 * time.Minute},
		{"five minutes", 5 * time.Minute, time.Minute, 10 * time.Second, 218 * time.Second, 230 * time.Second},
		// 75% of 100s is 75s, but that leaves 25s < min_remaining 60s + timeout:
		// bounded by 100-60-10 = 30s.
		{"short lifetime", 100 * time.Second, time.Minute, 10 * time.Second, 28 * time.Second, 30 * time.Second},
		{"three seconds", 3 * time.Second, time.Second, 10 * time.Second, time.Second, time.Second},
		{"useless token", 30 * time.Second, time.Minute, 10 * time.Second, time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, rnd := range []float64{0, 0.5, 0.999} {
				d := refreshAfter(tt.lifetime, tt.minRem, tt.timeout, rnd)
				if d < tt.lo || d > tt.hi {
					t.Errorf("rnd %.3f: %v, want in [%v, %v]", rnd, d, tt.lo, tt.hi)
				}
				// The new token must be due before the old falls under min_remaining.
				if tt.lifetime > tt.minRem+2*time.Second && d+min(tt.timeout, (tt.lifetime-tt.minRem)/2) > tt.lifetime-tt.minRem {
					t.Errorf("rnd %.3f: refresh at %v leaves no room before min_remaining", rnd, d)
				}
			}
			if a, b := refreshAfter(tt.lifetime, tt.minRem, tt.timeout, 0), refreshAfter(tt.lifetime, tt.minRem, tt.timeout, 0.999); tt.lo != tt.hi && a == b {
				t.Errorf("no jitter: %v", a)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	max := 30 * time.Second
	for attempt, ceiling := range map[int]time.Duration{1: 500 * time.Millisecond, 2: time.Second, 4: 4 * time.Second, 7: 30 * time.Second, 100: 30 * time.Second} {
		if got := backoff(attempt, max, 0.999); got > ceiling || got < ceiling*99/100 {
			t.Errorf("attempt %d top: %v, want about %v", attempt, got, ceiling)
		}
		if got := backoff(attempt, max, 0); got != backoffFloor {
			t.Errorf("attempt %d bottom: %v, want floor %v", attempt, got, backoffFloor)
		}
	}
	if got := retryDelay(1, max, 8*time.Second, 0.1); got != 8*time.Second {
		t.Errorf("Retry-After not honoured: %v", got)
	}
	if got := retryDelay(1, max, time.Hour, 0.1); got != maxRetryAfter {
		t.Errorf("Retry-After not capped: %v", got)
	}
}
