package tokens

import (
	"testing"
	"time"
)

// The budget counts requests in a sliding hour: the max-th is allowed, the
// next not before the oldest leaves the window.
func TestBudget(t *testing.T) {
	b := budget{max: 3}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 3; i++ {
		if ok, _ := b.take(t0.Add(time.Duration(i) * time.Minute)); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	ok, until := b.take(t0.Add(10 * time.Minute))
	if ok || !until.Equal(t0.Add(time.Hour)) {
		t.Errorf("4th within the hour: ok=%v until %v", ok, until)
	}
	if ok, _ := b.take(t0.Add(time.Hour)); !ok {
		t.Errorf("refused once the first left the window")
	}
	if ok, until := b.take(t0.Add(time.Hour + 30*time.Second)); ok || !until.Equal(t0.Add(time.Hour+time.Minute)) {
		t.Errorf("then: ok=%v until %v", ok, until)
	}
	if ok, _ := (&budget{}).take(t0); !ok {
		t.Errorf("no max: refused")
	}
}
