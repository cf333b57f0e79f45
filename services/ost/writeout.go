package ost

import (
	"fmt"
	"os"
)

// Early write-out: the data of a stream of writes goes to disk while the
// client is still writing, as on a Lustre OST, not all at its fsync.
//
// The kernel holds what an OST writes as dirty pages until they expire
// (30 s) or memory runs short, so an fsync after a large write found all of
// it still to write and waited for the disk to take the whole of it, with
// nothing overlapped. Every writeoutBytes written to an object, the OST
// writes the span they cover out and flushes the disk's cache, from one
// goroutine of the store, so an fsync waits only for what came after.
//
// Submitting the pages (sync_file_range) is not enough: the disk acknowledges
// them into its volatile cache (a virtual disk's is the host's page cache),
// and the fsync's cache flush then waited for all of it to reach stable
// storage: ~50 ms after 94 MB here, however slowly it had been written.
// fdatasync after each span moves that flush into the stream too (the final
// one then took 3 ms).
//
// Durability is unchanged: nothing is acknowledged as durable but by the
// object's own sync (syncHandle). The early fdatasync goes through a
// descriptor of its own: Linux reports a write-back error once to each
// open file description, so the handle's descriptor still reports, at the
// next fsync, an error the early one met, and the early one only logs it.
//
// Small objects (below writeoutBytes: every small file) never start one; an
// object rewritten in place goes to disk once per writeoutBytes written; a
// write only queues the span, and if the queue is full the span is left to
// the next write-out or fsync of the object, which cover the whole file.
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
	seq    uint64 // store.writeoutSeq when queued
}

// queueWriteout has the write-out goroutine submit [lo, hi) of h's data
// file, unless it is busy. The caller holds a reference on h.
func (s *store) queueWriteout(h *handle, lo, hi int64) {
	s.cache.retain(h)
	select {
	case s.writeouts <- writeoutSpan{h, lo, hi, s.writeoutSeq.Add(1)}:
	default:
		s.cache.release(h)
	}
}

// runWriteouts writes out and flushes queued spans until the queue is
// closed. A failure is advice lost: the next fsync of the object writes
// what is left and reports what the disk reports.
func (s *store) runWriteouts() {
	defer close(s.writeoutsDone)
	for w := range s.writeouts {
		// An fdatasync covers every span of the object queued before it
		// started: one queued behind it needs none of its own.
		if w.seq > w.h.flushedSeq {
			upto := s.writeoutSeq.Load()
			if err := writeOut(w); err != nil {
				s.log.Warn("early write-out failed", "object", w.h.obj, "err", err)
				s.cache.release(w.h)
				continue
			}
			w.h.flushedSeq = upto
		}
		s.writtenOut.Add(w.hi - w.lo)
		s.cache.release(w.h)
	}
}

// writeOut makes the bytes of the object's data file durable, the span
// and what came before it (its checksums wait for the object's own sync),
// through a descriptor of its own (see the top of this file).
func writeOut(w writeoutSpan) error {
	own, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", w.h.data.Fd()))
	if err != nil {
		return err
	}
	defer own.Close()
	return fdatasync(own)
}
