//go:build !race

package tokens

const raceOn = false
