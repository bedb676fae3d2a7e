// Package daemontest holds what tokend's tests share: strict stand-ins for
// the token endpoint and Vault, the real peers (a Vault dev server, an
// independent OAuth2 server), the real binaries, and a real systemd as
// PID 1 in namespaces. Without a peer a test skips loudly; under
// TOKEND_E2E=1 it fails instead.
package daemontest

import (
	"path/filepath"
	"runtime"
)

// Root joins elem to the module's root directory, wherever the test runs.
func Root(elem ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", ".."}, elem...)...)
}
