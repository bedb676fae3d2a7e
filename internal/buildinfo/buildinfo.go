// Package buildinfo says which build of tokend this is, for `--version`,
// the User-Agent of token requests and the tokend_build_info metric.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version and Commit are stamped by packaging/build.sh:
//
//	-X github.com/tokend/tokend/internal/buildinfo.Version=0.1.0
//	-X github.com/tokend/tokend/internal/buildinfo.Commit=1a2b3c4
//
// A plain `go build` in a checkout leaves Version "dev" and takes the
// commit from the Go toolchain's VCS stamp.
var (
	Version = "dev"
	Commit  = ""
)

// String is the one line `tokend --version` prints, such as
// "tokend 0.1.0 (commit 1a2b3c4, go1.26.8)".
func String(prog string) string {
	return fmt.Sprintf("%s %s (commit %s, %s)", prog, Version, commit(), runtime.Version())
}

func commit() string {
	if Commit != "" {
		return Commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "unknown"
	}
	return rev[:min(7, len(rev))] + dirty
}
