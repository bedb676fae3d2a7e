//go:build race

package tokens

// raceOn: the tests run with the race detector.
const raceOn = true
