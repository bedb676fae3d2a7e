package server

import "testing"

func TestCredentialAddr(t *testing.T) {
	tests := []struct{ addr, unit, id string }{
		{"@f00d/unit/api-call.service/api-token", "api-call.service", "api-token"},
		{"@1/unit/x.service/vibes", "x.service", "vibes"},
		{"@", "", ""},
		{"@abc", "", ""},
		{"@1/unit/x.service/", "", ""},
	}
	for _, tt := range tests {
		unit, id, ok := Peer{Addr: tt.addr}.Credential()
		if ok != (tt.unit != "") || unit != tt.unit || id != tt.id {
			t.Errorf("Credential(%q) = %q %q %v", tt.addr, unit, id, ok)
		}
	}
}
