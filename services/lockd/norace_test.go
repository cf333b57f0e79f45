//go:build !race

package lockd

const raceEnabled = false
