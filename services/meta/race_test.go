//go:build race

package meta

// raceEnabled: the race detector slows CPU work several times, so timing
// based expectations are relaxed.
const raceEnabled = true
