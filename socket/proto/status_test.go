package proto

import (
	"strings"
	"testing"
	"time"
)

// A STATUS answer reads back as what was written, unknowns and a last
// error with spaces included; a mangled one is an error, not zeros.
func TestStatusRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 28, 7, 0, 0, 0, time.UTC)
	for _, st := range []Status{
		{Name: "api", State: StateOK, ExpiresIn: 3120, RefreshIn: 2261, LastSuccess: at},
		{Name: "api", State: StateOK, ExpiresIn: 3120, RefreshIn: 2261, LastSuccess: at, Source: "file"},
		{Name: "x", State: StateDegraded, ExpiresIn: 1, RefreshIn: 1, Source: "vault", LastError: "vault sealed"},
		{Name: "a.b-c_d", State: StateDegraded, ExpiresIn: 0, RefreshIn: 3, Failures: 3, LastSuccess: at,
			LastError: "token endpoint answered 503: temporarily_unavailable (retry in 2s)"},
		{Name: "x", State: StateUnavailable, ExpiresIn: Unknown, RefreshIn: Unknown, Failures: 12,
			LastError: "no client credentials yet: vault answered 403 to GET /v1/secret/data/x: permission denied"},
	} {
		got, err := ParseStatus(st.String())
		if err != nil || got != st {
			t.Errorf("%q reads back as %+v, %v", st.String(), got, err)
		}
	}
	// An answer from before source= (0.1) still parses.
	if got, err := ParseStatus("name=x state=ok expires_in=1 refresh_in=- failures=0 last_success=- last_error=-"); err != nil || got.Source != "" || got.Name != "x" {
		t.Errorf("a 0.1 answer reads as %+v, %v", got, err)
	}
	line := Status{Name: "x", State: StateDegraded, LastError: "a\nREADY=1"}.String()
	if strings.Contains(line, "\n") {
		t.Errorf("a line break survived: %q", line)
	}
	for _, bad := range []string{"", "name=x", "name=x state=ok expires_in=soon refresh_in=- failures=0 last_success=- last_error=-",
		"state=ok name=x expires_in=1 refresh_in=- failures=0 last_success=- last_error=-",
		"name=x state=ok expires_in=1 refresh_in=- failures=0 last_success=yesterday last_error=-"} {
		if st, err := ParseStatus(bad); err == nil {
			t.Errorf("ParseStatus(%q) = %+v, want an error", bad, st)
		}
	}
}
