//go:build race

package daemon

// raceOn: the tests run with the race detector.
const raceOn = true
