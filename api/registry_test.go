package api

import (
	"log/slog"
	"testing"
)

func TestRegistryListed(t *testing.T) {
	r := NewOSTRegistry(nil, "fs", slog.New(slog.DiscardHandler))
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	if !closed(r.Listed(0)) {
		t.Fatal("Listed(0) should be closed at once")
	}
	two := r.Listed(2)
	// What Run does on a listing or a watch event.
	learn := func(osts ...uint32) {
		r.mu.Lock()
		r.osts = map[uint32]OSTInfo{}
		for _, i := range osts {
			r.osts[i] = OSTInfo{Index: i}
		}
		r.wakeLocked()
		r.mu.Unlock()
	}
	learn(0)
	if closed(two) {
		t.Fatal("Listed(2) closed with one OST listed")
	}
	learn(0, 3)
	if !closed(two) {
		t.Fatal("Listed(2) still open with two OSTs listed")
	}
	if len(r.waiters) != 0 {
		t.Fatalf("%d waiters kept after being satisfied", len(r.waiters))
	}
}
