package config

import (
	"os"
	"strings"
	"testing"
)

func TestIDMaps(t *testing.T) {
	maps := func(uid, gid string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if strings.HasSuffix(p, "uid_map") {
				return []byte(uid), nil
			}
			return []byte(gid), nil
		}
	}
	host := "         0          0 4294967295\n"
	private := "         0          0          1\n       998        998          1\n" // systemd's PrivateUsers=
	listed := &Config{Tokens: map[string]*TokenConfig{"open": {}, "vibes": {Access: Access{UIDs: []uint32{1001}}}}}
	open := &Config{Tokens: map[string]*TokenConfig{"open": {}}}
	for _, tc := range []struct {
		name     string
		uid, gid string
		cfg      *Config
		want     string // "" = accepted
	}{
		{"host namespace", host, host, listed, ""},
		{"private users", private, private, listed, `allow lists of token vibes need peer ids as the host sees them, but /proc/self/uid_map is "0 0 1 998 998 1"`},
		{"gid map only", host, private, listed, "/proc/self/gid_map"},
		{"no allow lists", private, private, open, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkIDMaps(tc.cfg, IDMapProblem(maps(tc.uid, tc.gid)))
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	if p := IDMapProblem(func(string) ([]byte, error) { return nil, os.ErrNotExist }); p != "" {
		t.Errorf("a kernel without user namespaces: %q", p)
	}
}
