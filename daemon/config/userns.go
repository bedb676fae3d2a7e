package config

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// identityMapped reports whether a /proc/self/{uid,gid}_map text maps
// every id to itself ("0 0 4294967295"), as the host's namespace does.
func identityMapped(idMap string) bool {
	f := strings.Fields(idMap)
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

// IDMapProblem says why peer ids may not be the host's: tokend runs in a
// user namespace (systemd's PrivateUsers=, a rootless container) that does
// not map ids one to one. The kernel then reports every peer it cannot map
// as the overflow id 65534. "" means the ids are the host's. read is
// os.ReadFile; tests pass their own maps.
func IDMapProblem(read func(string) ([]byte, error)) string {
	for _, f := range []string{"/proc/self/uid_map", "/proc/self/gid_map"} {
		b, err := read(f)
		if os.IsNotExist(err) {
			continue // a kernel without user namespaces: ids are the host's
		}
		if err != nil {
			return fmt.Sprintf("%s is unreadable: %v", f, err)
		}
		if !identityMapped(string(b)) {
			return fmt.Sprintf("%s is %q: tokend runs in a user namespace where every client it cannot map reads as uid/gid 65534",
				f, strings.Join(strings.Fields(string(b)), " "))
		}
	}
	return ""
}

// checkIDMaps refuses allow lists when peer ids may not be the host's:
// the lists could not tell the clients apart, and allowing 65534 would
// allow them all.
func checkIDMaps(cfg *Config, problem string) error {
	if problem == "" {
		return nil
	}
	var listed []string
	for name, tc := range cfg.Tokens {
		if len(tc.Access.UIDs) > 0 || len(tc.Access.GIDs) > 0 {
			listed = append(listed, name)
		}
	}
	if len(listed) == 0 {
		return nil
	}
	slices.Sort(listed)
	return fmt.Errorf("the allow lists of token %s need peer ids as the host sees them, but %s; run tokend without PrivateUsers= or a user namespace",
		strings.Join(listed, ", "), problem)
}
