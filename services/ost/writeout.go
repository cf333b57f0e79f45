package ost

import (
	"golang.org/x/sys/unix"
)

// Early write-out: the data of a stream of writes goes to disk while the
// client is still writing, as on a Lustre OST, not all at its fsync.
//
// The kernel holds what an OST writes as dirty pages until they expire
// (30 s) or memory runs short, so an fsync after a large write found all of
// it still to write and waited for the disk to take the whole of it, with
// nothing overlapped. Every writeoutBytes written to an object, the OST
// starts the write-out of the span they cover (sync_file_range with
// SYNC_FILE_RANGE_WRITE, which submits the pages and does not wait for
// them), so an fsync waits only for what came after. Durability is
// unchanged: nothing is acknowledged as durable but by fsync (syncHandle).
//
// Submitting pages is not free (the file system allocates their blocks
// then), so one goroutine of the store does it, not the write: a write
// only queues the span, and if the queue is full the span is left to the
// next fsync. Small objects (below writeoutBytes: every small file) never
// start one; an object rewritten in place goes to disk once per
// writeoutBytes written.
const (
	writeoutBytes = 4 << 20
	writeoutQueue = 64
)

// writeout is what was written to an object since its last write-out
// started. Guarded by the object's stripe lock, held exclusively.
type writeout struct {
	bytes  int64
	lo, hi int64 // the span those bytes lie in
}

// wrote adds the write [off, end) and returns the span to write out once
// writeoutBytes have accumulated.
func (w *writeout) wrote(off, end int64) (lo, hi int64, due bool) {
	if w.bytes == 0 {
		w.lo, w.hi = off, end
	} else {
		w.lo, w.hi = min(w.lo, off), max(w.hi, end)
	}
	w.bytes += end - off
	if w.bytes < writeoutBytes {
		return 0, 0, false
	}
	lo, hi = w.lo, w.hi
	*w = writeout{}
	return lo, hi, true
}

// writeoutSpan is a span of one object's data file to submit.
type writeoutSpan struct {
	h      *handle // referenced until submitted
	lo, hi int64
}

// queueWriteout has the write-out goroutine submit [lo, hi) of h's data
// file, unless it is busy. The caller holds a reference on h.
func (s *store) queueWriteout(h *handle, lo, hi int64) {
	s.cache.retain(h)
	select {
	case s.writeouts <- writeoutSpan{h, lo, hi}:
	default:
		s.cache.release(h)
	}
}

// runWriteouts submits queued spans until the queue is closed. A failure
// is advice lost: the pages stay dirty, and the next fsync writes them and
// reports what the disk reports.
func (s *store) runWriteouts() {
	defer close(s.writeoutsDone)
	for w := range s.writeouts {
		if err := unix.SyncFileRange(int(w.h.data.Fd()), w.lo, w.hi-w.lo, unix.SYNC_FILE_RANGE_WRITE); err != nil {
			s.log.Debug("early write-out", "object", w.h.obj, "err", err)
		} else {
			s.writtenOut.Add(w.hi - w.lo)
		}
		s.cache.release(w.h)
	}
}
