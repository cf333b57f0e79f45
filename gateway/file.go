package gateway

import (
	"context"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
)

// handle is an open file. Per-file state lives on the node, shared by all
// of the file's handles, as the kernel's page cache is; a handle keeps only
// its reader's read-ahead.
type handle struct {
	reads bool      // opened for reading
	ra    readAhead // guarded by the node's mu
}

// openFlags are the FUSE open flags for a regular file opened with flags.
//
// close(2) of a read-only file has nothing to flush: spare it the FLUSH
// round trip. (Locks are the kernel's own, so FLUSH need not release any;
// cross-client locks will change that.)
//
// A write-only file bypasses the kernel's page cache (FOPEN_DIRECT_IO):
// nothing can read or map it through that handle, so caching its pages
// gains nothing, and it costs: a cached write(2) is copied into pages and
// cut at partial ones (two requests for every unaligned write), and the
// kernel lets one cached write of a file run at a time. Direct, each write
// is one request, and writes inside the file's size run in parallel
// (FOPEN_PARALLEL_DIRECT_WRITES): strided writers of one shared file
// (IOR-hard) went from 178 to 230-290 MB/s here. The kernel drops the cached
// pages a direct write covers; Write drops them again once it has the
// bytes, while a handle that reads is open.
func openFlags(flags uint32) uint32 {
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		return fuse.FOPEN_NOFLUSH
	case syscall.O_WRONLY:
		return fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES
	}
	return 0
}

// opened counts a new handle of the file and returns it.
func (n *node) opened(flags uint32) *handle {
	h := &handle{reads: flags&syscall.O_ACCMODE != syscall.O_WRONLY}
	n.mu.Lock()
	n.opens++
	if h.reads {
		n.readers++
	}
	n.mu.Unlock()
	return h
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	var l *api.Layout // a regular file's
	if n.isReg() {
		var err error
		if l, err = n.getLayout(ctx); err != nil {
			return nil, 0, n.gw.errno("open", err)
		}
		// Close-to-open at the least: see the size others flushed.
		if _, _, err := n.currentAttr(ctx); err != nil {
			return nil, 0, n.gw.errno("open", err)
		}
		if flags&syscall.O_TRUNC != 0 {
			if err := n.truncate(ctx, 0); err != nil {
				return nil, 0, n.gw.errno("open", err)
			}
		}
	}
	h := n.opened(flags)
	fuseFlags := openFlags(flags)
	if h.reads && l != nil && n.readOnOpen(ctx, l) {
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	return h, fuseFlags, 0
}

// readOnOpen puts the whole of a small file kept on meta (Data-on-MDT)
// into the kernel's page cache as it is opened, and reports whether it
// did; the open then keeps the cache (it is as fresh as a read right
// after the open), and the read(2) that follows an open almost always
// needs no FUSE READ: Lustre's DoM read-on-open. Only for a file no other
// handle of this mount has open and no write of ours is on its way to
// meta, so the kernel's pages hold nothing newer than meta's bytes. Any
// failure leaves the reads to READ, which reports it.
func (n *node) readOnOpen(ctx context.Context, l *api.Layout) bool {
	n.mu.Lock()
	size := int64(n.attr.Size)
	busy := n.opens > 1 || n.dirty || len(n.pending) > 0 || len(n.inflight) > 0
	n.mu.Unlock()
	if busy || size == 0 || size > int64(l.DoMSize) {
		return false
	}
	data, err := n.gw.readDoM(ctx, n.ino(), 0, int(size))
	if err != nil {
		return false
	}
	if len(data) < int(size) { // written only in part: zeros after
		data = append(data, make([]byte, int(size)-len(data))...)
	}
	return n.WriteCache(0, data) == 0
}

// killSetID clears the set-ID bits a write clears when the caller is not
// root (HANDLE_KILLPRIV_V2 leaves it to us). The kernel asks for it too,
// with a bare SETATTR (Setattr), but only while the mode it caches shows
// the bits; this catches a mode changed by another client since. FUSE does
// not pass the caller's capabilities: root stands for CAP_FSETID.
func (n *node) killSetID(ctx context.Context) error {
	caller, ok := fuse.FromContext(ctx)
	if !ok || caller.Uid == 0 {
		return nil
	}
	n.mu.Lock()
	mode := n.attr.Mode
	n.mu.Unlock()
	if api.KillSUIDGID(mode) == mode {
		return nil
	}
	if _, err := n.setAttr(ctx, api.SetAttrReq{Ino: n.ino(), Valid: api.SetKillSUIDGID}); err != nil {
		return err
	}
	n.gw.invalidateKernel([]dropped{{inos: []uint64{n.ino()}}})
	return nil
}

func (n *node) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	l, err := n.getLayout(ctx)
	if err != nil {
		return nil, n.gw.errno("read", err)
	}
	n.mu.Lock()
	size := int64(n.attr.Size)
	n.mu.Unlock()
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	dest = dest[:min(int64(len(dest)), size-off)]
	if err := n.waitWrites(&extent{off, off + int64(len(dest))}); err != nil {
		return nil, n.gw.errno("read", err)
	}
	if h, ok := fh.(*handle); ok {
		n.noteRead(h, l, off, len(dest), size)
		if n.serveAhead(h, dest, off) {
			return destRead(dest), 0
		}
	}
	r, err := n.gw.readExtent(ctx, n.ino(), l, off, dest)
	if err != nil {
		return nil, n.gw.errno("read", err)
	}
	return r, 0
}

func (n *node) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	l, err := n.getLayout(ctx)
	if err != nil {
		return 0, n.gw.errno("write", err)
	}
	if off < 0 || off+int64(len(data)) > 1<<60 {
		return 0, syscall.EFBIG
	}
	if err := n.killSetID(ctx); err != nil {
		return 0, n.gw.errno("write", err)
	}
	ext := extent{off, off + int64(len(data))}
	// Back-pressure: at most maxWriteBehind bytes in flight per mount.
	if err := n.gw.writeSlots.Acquire(context.WithoutCancel(ctx), int64(len(data))); err != nil {
		return 0, n.gw.errno("write", err)
	}
	n.gw.trackWritten(n) // before n.mu: see the lock order on node
	// A write through a write-only (direct) handle did not pass through the
	// page cache. The kernel dropped the pages it covers before sending it,
	// but a read through another handle may have cached them again from
	// the OSTs since. Drop them once more, after n.mu is given back (the
	// deferred calls run in reverse): a read that comes after this write
	// has registered waits for it (waitWrites).
	dropPages := false
	defer func() {
		if dropPages {
			n.gw.dropPages(n.ino(), off, int64(len(data)))
		}
	}()
	n.mu.Lock()
	defer n.mu.Unlock()
	if h, ok := fh.(*handle); ok && !h.reads && n.readers > 0 {
		dropPages = true
	}
	// Overlapping writes reach the OSTs in order: wait for any in flight.
	n.awaitWritesLocked(&ext)
	if err := n.takeWriteErrLocked(); err != nil {
		n.gw.writeSlots.Release(int64(len(data)))
		return 0, n.gw.errno("write", err)
	}
	if uint64(ext.end) > n.attr.Size {
		n.attr.Size = uint64(ext.end)
	}
	n.attr.Mtime = time.Now().UnixNano()
	n.dirty = true
	n.dataGen++

	n.writeBehindLocked(l, off, data)
	return uint32(len(data)), 0
}

// writeBehind is a write in flight: sent, not yet on the OSTs. Writes in
// flight never overlap one another (Write waits for any its extent
// overlaps), so they may complete in any order.
type writeBehind struct {
	ext    extent
	layout *api.Layout
	data   []byte  // the bytes, in buf
	buf    *[]byte // from iobuf, given back when the write completes
	// claimed is set by whoever runs the write: the goroutine sendLocked
	// starts, or a caller waiting for it that got there first.
	claimed atomic.Bool
}

// claim reports whether the caller is the one to run w.
func (w *writeBehind) claim() bool { return w.claimed.CompareAndSwap(false, true) }

// sendLocked starts writing data (in buf) at off to the OSTs; the buffer
// and data's write-behind slots are given back when the write completes.
func (n *node) sendLocked(l *api.Layout, off int64, data []byte, buf *[]byte) {
	w := &writeBehind{ext: extent{off, off + int64(len(data))}, layout: l, data: data, buf: buf}
	n.inflight = append(n.inflight, w)
	go func() {
		if w.claim() {
			n.runWrite(w)
		}
	}()
}

// runWrite writes w to the OSTs and completes it.
func (n *node) runWrite(w *writeBehind) {
	touched := map[int]bool{}
	werr := n.useObjects(context.Background(), w.layout, w.ext.end)
	if werr == nil {
		werr = n.gw.writeExtent(context.Background(), n.ino(), w.layout, w.ext.off, w.data, touched)
	}
	n.gw.writeSlots.Release(int64(len(w.data)))
	iobuf.Put(w.buf)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.touched == nil {
		n.touched = map[int]bool{}
	}
	for s := range touched {
		n.touched[s] = true
	}
	if werr != nil && n.wbErr == nil {
		n.gw.log.Warn("write-behind failed", "ino", n.ino(), "offset", w.ext.off, "len", w.ext.end-w.ext.off, "err", werr)
		n.wbErr = werr
	}
	n.inflight = slices.DeleteFunc(n.inflight, func(f *writeBehind) bool { return f == w })
	if len(n.inflight) == 0 {
		n.sendPendingLocked(nil) // pending waits no longer than the writes before it
	}
	n.wbDone.Broadcast()
}

// awaitWritesLocked returns once the pending stretches and the writes in
// flight that overlap e (all of them when e is nil) are on the OSTs. A
// write whose goroutine has not started yet it runs itself: on a two-CPU
// machine a new goroutine was measured to wait ~130 µs before it ran
// (most likely queued on a P whose thread had gone on to block in a FUSE
// read(2), until sysmon handed the P on), and a close(2) right after a
// small write waited that long for it.
func (n *node) awaitWritesLocked(e *extent) {
	for {
		n.sendPendingLocked(e)
		var unclaimed *writeBehind
		busy := false
		for _, w := range n.inflight {
			if e != nil && !w.ext.overlaps(*e) {
				continue
			}
			if w.claim() {
				unclaimed = w
				break
			}
			busy = true
		}
		switch {
		case unclaimed != nil:
			n.mu.Unlock()
			n.runWrite(unclaimed)
			n.mu.Lock()
		case busy:
			n.wbDone.Wait()
		default:
			return
		}
	}
}

func (n *node) takeWriteErrLocked() error {
	err := n.wbErr
	n.wbErr = nil
	return err
}

// waitWrites waits until writes in flight that overlap e (all of them when
// e is nil) are on the OSTs, and returns a write-behind error if one failed.
func (n *node) waitWrites(e *extent) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.awaitWritesLocked(e)
	return n.takeWriteErrLocked()
}

// flushSize tells meta the size and mtime this mount's writes produced.
func (n *node) flushSize(ctx context.Context) error {
	if err := n.waitWrites(nil); err != nil {
		return err
	}
	n.mu.Lock()
	if !n.dirty {
		n.mu.Unlock()
		return nil
	}
	req := api.UpdateSizeReq{Ino: n.ino(), Size: n.attr.Size, Mtime: n.attr.Mtime}
	n.dirty = false
	n.mu.Unlock()
	var r api.AttrResp
	if err := n.gw.metaCall(ctx, api.OpUpdateSize, req, &r); err != nil {
		n.gw.ns.forgetAttr(n.ino())
		n.mu.Lock()
		n.dirty = true
		n.mu.Unlock()
		return err
	}
	n.gw.ns.changedAttr(r.Attr)
	n.refresh(r.Attr, nil)
	return nil
}

// Flush runs at every close(2): the size becomes visible through meta.
func (n *node) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	return n.gw.errno("flush", n.flushSize(ctx))
}

// Fsync makes written stripes durable on their OSTs, then the size and
// every metadata change this file depends on durable in meta.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if n.isReg() {
		l, err := n.getLayout(ctx)
		if err != nil {
			return n.gw.errno("fsync", err)
		}
		if err := n.waitWrites(nil); err != nil {
			return n.gw.errno("fsync", err)
		}
		n.mu.Lock()
		stripes := make([]int, 0, len(n.touched))
		for s := range n.touched {
			stripes = append(stripes, s)
		}
		n.touched = nil
		n.mu.Unlock()
		slices.Sort(stripes)
		if err := n.gw.syncObjects(ctx, l, stripes); err != nil {
			n.mu.Lock()
			if n.touched == nil {
				n.touched = map[int]bool{}
			}
			for _, s := range stripes {
				n.touched[s] = true
			}
			n.mu.Unlock()
			return n.gw.errno("fsync", err)
		}
		if err := n.flushSize(ctx); err != nil {
			return n.gw.errno("fsync", err)
		}
	}
	return n.gw.errno("fsync", n.gw.metaCall(ctx, api.OpSync, api.Empty{}, nil))
}

func (n *node) Release(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	h, _ := fh.(*handle)
	if h != nil {
		n.releaseAhead(h)
	}
	// Release comes after the last Flush; a failure there was reported to
	// close(2). Try once more so the size is not left behind.
	err := n.flushSize(ctx)
	n.mu.Lock()
	n.opens--
	if h != nil && h.reads {
		n.readers--
	}
	last := n.opens == 0
	orphan := last && n.orphan
	if orphan {
		n.orphan = false
	}
	n.mu.Unlock()
	if last {
		n.gw.untrackWritten(n)
	}
	if orphan {
		n.releaseOrphan(ctx)
	}
	return n.gw.errno("release", err)
}

var _ fs.NodeAllocater = (*node)(nil)

// Allocate is fallocate(2) for modes 0 and FALLOC_FL_KEEP_SIZE: each OST
// reserves disk for its part of the range, so later writes there cannot
// fail with ENOSPC; mode 0 also grows the file. Punching holes and zeroing
// ranges are not supported (EOPNOTSUPP).
func (n *node) Allocate(ctx context.Context, fh fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	const keepSize = 1 // FALLOC_FL_KEEP_SIZE
	if mode&^keepSize != 0 {
		return syscall.EOPNOTSUPP
	}
	end := off + size
	if size == 0 || end < off || end > 1<<60 {
		return syscall.EINVAL
	}
	l, err := n.getLayout(ctx)
	if err != nil {
		return n.gw.errno("fallocate", err)
	}
	if err := n.useObjects(ctx, l, int64(end)); err != nil {
		return n.gw.errno("fallocate", err)
	}
	if err := n.gw.allocateObjects(ctx, l, int64(off), int64(end)); err != nil {
		return n.gw.errno("fallocate", err)
	}
	if mode&keepSize != 0 {
		return 0
	}
	n.mu.Lock()
	cur := n.attr.Size
	n.mu.Unlock()
	if end <= cur {
		return 0
	}
	return n.gw.errno("fallocate", n.truncate(ctx, end))
}
