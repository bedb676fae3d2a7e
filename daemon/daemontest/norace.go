//go:build !race

package daemontest

// Race says whether the tests run with the race detector (and build the
// binaries with it).
const Race = false
