//go:build !race

package daemon

const raceOn = false
