//go:build race

package lockd

// raceEnabled: the race detector is on.
const raceEnabled = true
