package gateway

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
)

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// TestPendingWriteJoin: a write right after or right before a pending
// stretch, inside its chunk, joins it, moving it into a buffer of the
// whole chunk with every byte at its place; a write with a gap, an
// overlapping one, one with another layout, an empty one or one past the
// chunk does not join and changes nothing.
func TestPendingWriteJoin(t *testing.T) {
	l, other := &api.Layout{}, &api.Layout{}
	const at = 3*maxWrite + 100_000 // inside the fourth chunk
	first := pattern(1, 40_000)
	buf := iobuf.Get(len(first))
	copy(*buf, first)
	p := &pendingWrite{layout: l, lo: at, hi: at + int64(len(first)), buf: buf}
	want := slices.Clone(first)
	wantLo := int64(at)
	check := func(what string) {
		t.Helper()
		if p.lo != wantLo || p.hi != wantLo+int64(len(want)) || !bytes.Equal(p.bytes(), want) {
			t.Fatalf("%s: stretch [%d, %d), bytes equal %v; want [%d, %d)", what, p.lo, p.hi, bytes.Equal(p.bytes(), want), wantLo, wantLo+int64(len(want)))
		}
	}
	refused := func(what string, l *api.Layout, off int64, d []byte) {
		t.Helper()
		if p.join(l, off, d) {
			t.Fatalf("%s joined", what)
		}
		check(what)
	}
	next := pattern(2, 40_000)
	refused("a write with a gap after", l, p.hi+1, next)
	refused("a write with a gap before", l, p.lo-int64(len(next))-1, next)
	refused("an overlapping write", l, p.hi-1, next)
	refused("a write with another layout", other, p.hi, next)
	refused("an empty write", l, p.hi, nil)
	if p.whole {
		t.Fatal("a stretch nothing joined holds a chunk's buffer")
	}

	if !p.join(l, p.hi, next) {
		t.Fatal("a write right after the stretch did not join")
	}
	want = append(want, next...)
	check("after an append")
	if !p.whole || len(*p.buf) != maxWrite || !bytes.Equal((*p.buf)[p.lo-3*maxWrite:p.hi-3*maxWrite], want) {
		t.Fatalf("after a join: whole %v, buffer of %d; want the chunk's, the bytes at their offsets in it", p.whole, len(*p.buf))
	}
	before := pattern(3, 30_000)
	if !p.join(l, p.lo-int64(len(before)), before) {
		t.Fatal("a write right before the stretch did not join")
	}
	want, wantLo = append(slices.Clone(before), want...), wantLo-int64(len(before))
	check("after a prepend")

	chunk := int64(3 * maxWrite)
	refused("a write across the chunk's start", l, chunk-10, make([]byte, int(p.lo-chunk)+10))
	refused("a write across the chunk's end", l, p.hi, make([]byte, int(chunk+maxWrite-p.hi)+1))
	if p.full() {
		t.Fatal("full before the chunk is")
	}
	head, tail := pattern(4, int(p.lo-chunk)), pattern(5, int(chunk+maxWrite-p.hi))
	if !p.join(l, chunk, head) || !p.join(l, p.hi, tail) {
		t.Fatal("writes filling the chunk did not join")
	}
	want, wantLo = append(append(slices.Clone(head), want...), tail...), chunk
	check("filled")
	if !p.full() {
		t.Fatal("a stretch of the whole chunk is not full")
	}
	iobuf.Put(p.buf)
}

// TestInterleavedWritesGather: two writers' records strided into one file
// (IOR-hard's shape), arriving out of order while a write is in flight,
// reach the OSTs as whole chunks, and every byte once and in its place.
func TestInterleavedWritesGather(t *testing.T) {
	m := &domRecorder{gate: make(chan struct{})}
	n, l := writeBehindNode(m)
	l.DoMSize = 8 << 20 // every byte goes to the recorder
	const rec, records = 47_008, 100
	var want []byte
	write := func(k int) {
		t.Helper()
		data := pattern(byte(k), rec)
		if err := n.gw.writeSlots.Acquire(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		n.mu.Lock()
		n.writeBehindLocked(l, int64(k*rec), data)
		n.mu.Unlock()
	}
	for k := range records {
		want = append(want, pattern(byte(k), rec)...)
	}
	write(0) // nothing in flight: sent at once, and held at the gate
	for k := 1; k+1 < records; k += 2 {
		write(k + 1) // each pair in the wrong order
		write(k)
	}
	write(records - 1)

	n.mu.Lock()
	var sent, held []extent
	for _, w := range n.inflight {
		sent = append(sent, w.ext)
	}
	for _, p := range n.pending {
		held = append(held, extent{p.lo, p.hi})
	}
	n.mu.Unlock()
	slices.SortFunc(sent, func(a, b extent) int { return int(a.off - b.off) })
	total := int64(records * rec)
	// The first record went alone; each whole chunk after it as one write.
	wantSent := []extent{{0, rec}}
	for c := int64(maxWrite); c+maxWrite <= total; c += maxWrite {
		wantSent = append(wantSent, extent{c, c + maxWrite})
	}
	if !slices.Equal(sent, wantSent) {
		t.Fatalf("in flight: %v; want the first record and each whole chunk after the first, %v", sent, wantSent)
	}
	// Left: the rest of the first chunk, and of the last.
	slices.SortFunc(held, func(a, b extent) int { return int(a.off - b.off) })
	if want := []extent{{rec, maxWrite}, {chunkOf(total), total}}; !slices.Equal(held, want) {
		t.Fatalf("pending: %v; want %v", held, want)
	}

	close(m.gate)
	waitWritesWithin(t, n, nil)
	if !bytes.Equal(m.image, want) {
		t.Fatalf("the region holds %d bytes, equal %v; want %d", len(m.image), bytes.Equal(m.image, want), len(want))
	}
	n.mu.Lock()
	left, pend := len(n.inflight), len(n.pending)
	n.mu.Unlock()
	if left != 0 || pend != 0 {
		t.Fatalf("%d writes in flight and %d pending after waiting for all", left, pend)
	}
	if !n.gw.writeSlots.TryAcquire(maxWriteBehind) {
		t.Fatal("write-behind slots not all given back")
	}
}

// TestPendingBounded: past maxPendingWrites stretches the lowest goes out;
// waiting for bytes sends the stretch holding them and leaves the others.
func TestPendingBounded(t *testing.T) {
	m := &domRecorder{gate: make(chan struct{})}
	n, l := writeBehindNode(m)
	l.DoMSize = 8 << 20
	write := func(off int64, size int) {
		t.Helper()
		if err := n.gw.writeSlots.Acquire(context.Background(), int64(size)); err != nil {
			t.Fatal(err)
		}
		n.mu.Lock()
		n.writeBehindLocked(l, off, pattern(byte(off), size))
		n.mu.Unlock()
	}
	state := func() (sent, held []int64) {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, w := range n.inflight {
			sent = append(sent, w.ext.off)
		}
		for _, p := range n.pending {
			held = append(held, p.lo)
		}
		slices.Sort(sent)
		slices.Sort(held)
		return sent, held
	}
	write(0, 1000) // in flight
	for i := int64(1); i <= maxPendingWrites+1; i++ {
		write(i*100_000, 1000) // none next to another
	}
	sent, held := state()
	if want := []int64{0, 100_000}; !slices.Equal(sent, want) {
		t.Fatalf("in flight %v, want %v: the lowest stretch goes when one too many are pending", sent, want)
	}
	if len(held) != maxPendingWrites || held[0] != 200_000 {
		t.Fatalf("pending %v, want %d stretches from 200,000 on", held, maxPendingWrites)
	}
	// A read of [300,500, 300,600) needs only the stretch at 300,000.
	n.mu.Lock()
	n.sendPendingLocked(&extent{300_500, 300_600})
	n.mu.Unlock()
	sent, held = state()
	if !slices.Contains(sent, 300_000) || slices.Contains(held, 300_000) || len(held) != maxPendingWrites-1 {
		t.Fatalf("after sending what [300,500, 300,600) needs: in flight %v, pending %v", sent, held)
	}
	close(m.gate)
	waitWritesWithin(t, n, nil)
	if !n.gw.writeSlots.TryAcquire(maxWriteBehind) {
		t.Fatal("write-behind slots not all given back")
	}
}
