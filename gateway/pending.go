package gateway

import (
	"cmp"
	"slices"

	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
)

// Write-behind gathering, after the Lustre client's aggregation of dirty
// pages into full-size RPCs. While a file has writes in flight, a small
// write is held back (pending) and the writes that land next to it, after
// it or before it, join it; they go to the OSTs as one request. The kernel
// cuts every unaligned write at partial pages and many programs write in
// small pieces, and each small request costs the OST a read-modify-write
// of a checksum block, a turn of its object's lock and a system call.
// Writers of one file that interleave their records (IOR's shared file:
// two writers' 47,008-byte records, each one's arriving in turn with the
// other's) fill a stretch from both sides and out of order, so several
// stretches may be pending at once, each inside one maxWrite-aligned chunk
// of the file; records that meet are merged.
//
// A pending stretch is sent when it fills its chunk, when more than
// maxPendingWrites would be pending (the lowest goes), when the file's
// last write in flight completes (so none waits longer than the writes
// before it, and none is held while nothing is in flight), or when anything
// needs the bytes on the OSTs (overlapping I/O, flush, fsync, truncate).

// maxPendingWrites bounds the stretches pending per file.
const maxPendingWrites = 4

// pendingWrite is one stretch [lo, hi) of written bytes not sent yet, all
// inside one chunk.
type pendingWrite struct {
	layout *api.Layout
	lo, hi int64
	// buf holds exactly the stretch's bytes until a second write joins it;
	// then (whole) the chunk's, each byte at its offset in the chunk. A
	// write that nothing joins (each mount's records of IOR-hard on two
	// mounts) goes out with one copy of its bytes and without holding 1 MiB.
	buf   *[]byte
	whole bool
}

// chunkOf is the start of the maxWrite-aligned chunk holding off.
func chunkOf(off int64) int64 { return off &^ (maxWrite - 1) }

func (p *pendingWrite) overlaps(e extent) bool { return extent{p.lo, p.hi}.overlaps(e) }

// bytes is the stretch's data.
func (p *pendingWrite) bytes() []byte {
	if !p.whole {
		return *p.buf
	}
	c := chunkOf(p.lo)
	return (*p.buf)[p.lo-c : p.hi-c]
}

// full reports whether the stretch is its whole chunk.
func (p *pendingWrite) full() bool { return p.hi-p.lo == maxWrite }

// join adds data, written at off with layout l, to p if it lies right
// after or right before p inside p's chunk, and reports whether it did.
func (p *pendingWrite) join(l *api.Layout, off int64, data []byte) bool {
	end := off + int64(len(data))
	c := chunkOf(p.lo)
	if p.layout != l || len(data) == 0 || (off != p.hi && end != p.lo) || off < c || end > c+maxWrite {
		return false
	}
	if !p.whole {
		b := iobuf.Get(maxWrite)
		copy((*b)[p.lo-c:], *p.buf)
		iobuf.Put(p.buf)
		p.buf, p.whole = b, true
	}
	copy((*p.buf)[off-c:], data)
	p.lo, p.hi = min(p.lo, off), max(p.hi, end)
	return true
}

// writeBehindLocked takes the bytes of a write the OSTs have yet to get
// (the caller holds their write-behind slots): it joins them to pending
// stretches, holds them pending, or sends them.
func (n *node) writeBehindLocked(l *api.Layout, off int64, data []byte) {
	if len(n.inflight) == 0 || len(data) >= maxWrite {
		buf := copyOf(data)
		n.sendLocked(l, off, *buf, buf)
		return
	}
	for len(data) > 0 { // a write across a chunk boundary is two stretches
		k := min(int64(len(data)), chunkOf(off)+maxWrite-off)
		n.pendLocked(l, off, data[:k])
		off, data = off+k, data[k:]
	}
}

// pendLocked adds data at off, inside one chunk, to the pending stretches.
func (n *node) pendLocked(l *api.Layout, off int64, data []byte) {
	for _, p := range n.pending {
		if !p.join(l, off, data) {
			continue
		}
		// The write may have closed the gap to another stretch.
		for j, q := range n.pending {
			if q != p && p.join(q.layout, q.lo, q.bytes()) {
				iobuf.Put(q.buf)
				n.pending = slices.Delete(n.pending, j, j+1)
				break
			}
		}
		if p.full() {
			n.sendStretchLocked(p)
		}
		return
	}
	if len(n.pending) == maxPendingWrites {
		n.sendStretchLocked(slices.MinFunc(n.pending, func(a, b *pendingWrite) int { return cmp.Compare(a.lo, b.lo) }))
	}
	n.pending = append(n.pending, &pendingWrite{layout: l, lo: off, hi: off + int64(len(data)), buf: copyOf(data)})
}

// copyOf returns data's bytes in a buffer from iobuf: the kernel reuses
// a write's data once the request is answered.
func copyOf(data []byte) *[]byte {
	buf := iobuf.Get(len(data))
	copy(*buf, data)
	return buf
}

// sendStretchLocked sends pending stretch p.
func (n *node) sendStretchLocked(p *pendingWrite) {
	n.pending = slices.DeleteFunc(n.pending, func(q *pendingWrite) bool { return q == p })
	n.sendLocked(p.layout, p.lo, p.bytes(), p.buf)
}

// sendPendingLocked sends the pending stretches that overlap e, or all of
// them when e is nil.
// Every write calls it (awaitWritesLocked): it allocates nothing.
func (n *node) sendPendingLocked(e *extent) {
	for i := 0; i < len(n.pending); {
		if p := n.pending[i]; e == nil || p.overlaps(*e) {
			n.sendStretchLocked(p) // takes p out: i is the next one now
		} else {
			i++
		}
	}
}
