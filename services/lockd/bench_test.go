package lockd

import (
	"context"
	"testing"
)

// The cost of a change barrier, which every namespace change pays: taken in
// the same process (stria up) and over NATS (a separate lockd), with a
// shared lock held by the asking client (the common case: nothing to
// recall).
func BenchmarkChangeBarrier(b *testing.B) {
	fs := uniqueFS()
	cfg := testConfig(fs)
	cfg.FreshNATS = true // no grace period to wait out
	l := startLockd(b, cfg)
	holder := startSession(b, fs)
	const dir = 7
	if ok, err := holder.Enqueue(context.Background(), []uint64{dir}); err != nil || !ok {
		b.Fatalf("enqueue: %v %v", ok, err)
	}
	ctx := context.Background()

	b.Run("in process", func(b *testing.B) {
		for b.Loop() {
			tok, err := l.Change(ctx, holder.ID(), []uint64{dir})
			if err != nil {
				b.Fatal(err)
			}
			l.Done(tok)
		}
	})
	b.Run("over NATS", func(b *testing.B) {
		meta := startSession(b, fs)
		for b.Loop() {
			tok, err := meta.Change(ctx, holder.ID(), []uint64{dir})
			if err != nil {
				b.Fatal(err)
			}
			meta.Done(tok)
		}
	})
}
