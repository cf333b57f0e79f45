package gateway

import (
	"bytes"
	"testing"

	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
)

// TestPendingWriteJoin: a write that continues a pending one joins it,
// moving both into a 1 MiB buffer once the pending one's own is too small,
// with every byte in order; a write elsewhere, with another layout, or
// taking the two past maxWrite does not join and changes nothing.
func TestPendingWriteJoin(t *testing.T) {
	pattern := func(seed byte, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return b
	}
	l, other := &api.Layout{}, &api.Layout{}
	first := pattern(1, 40000)
	buf := iobuf.Get(len(first))
	copy(*buf, first)
	own := cap(*buf)
	p := &pendingWrite{off: 100, buf: buf, layout: l}
	want := append([]byte(nil), first...)

	next := pattern(2, 40000) // 80,000 bytes do not fit the first buffer
	if own >= len(first)+len(next) {
		t.Fatalf("the first write's buffer holds %d bytes: the test needs one smaller than %d", own, len(first)+len(next))
	}
	refused := func(what string, l *api.Layout, off int64, d []byte) {
		t.Helper()
		if p.join(l, off, d) {
			t.Fatalf("%s joined", what)
		}
		if !bytes.Equal(*p.buf, want) {
			t.Fatalf("%s changed the pending bytes", what)
		}
	}
	refused("a write with a gap", l, p.end()+1, next)
	refused("an overlapping write", l, p.end()-1, next)
	refused("a write with another layout", other, p.end(), next)

	if !p.join(l, p.end(), next) {
		t.Fatal("a write continuing the pending one did not join")
	}
	want = append(want, next...)
	if cap(*p.buf) != maxWrite || !bytes.Equal(*p.buf, want) {
		t.Fatalf("after the join: %d bytes in a buffer of %d, equal %v; want %d bytes in one of %d", len(*p.buf), cap(*p.buf), bytes.Equal(*p.buf, want), len(want), maxWrite)
	}
	third := pattern(3, 1000)
	if !p.join(l, p.end(), third) {
		t.Fatal("a small write continuing the joined ones did not join")
	}
	want = append(want, third...)
	refused("a write past maxWrite", l, p.end(), make([]byte, maxWrite-len(want)+1))
	if !p.join(l, p.end(), pattern(4, maxWrite-len(want))) {
		t.Fatal("a write filling the buffer to maxWrite did not join")
	}
	want = append(want, pattern(4, maxWrite-len(want))...)
	if !bytes.Equal(*p.buf, want) || p.off != 100 {
		t.Fatalf("full buffer: %d bytes at %d, equal %v", len(*p.buf), p.off, bytes.Equal(*p.buf, want))
	}
	iobuf.Put(p.buf)
}
