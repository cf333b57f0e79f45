package ost

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
	"golang.org/x/sys/unix"
)

// The object store: see blockcrc.go for the on-disk format.
//
// Lock order (never acquire leftwards while holding a lock to the right):
//
//	store.stripes[i] (one object's RWMutex; never two stripes at once)
//	  → objDir.mu (directory fsync)
//	  → handleCache.mu (short; no I/O but closing evicted files)
//
// A request holds its object's stripe for its whole duration: readers share
// it, writers (write, punch, destroy) hold it exclusively, so the
// read-modify-write of an edge block is atomic against other writers.
//
// Known limitation: data and checksum slots are two separate writes. A crash
// in the middle of an overwrite that was never fsynced may leave a block
// whose data and checksum disagree; reading it then fails with EIO
// (CodeCorrupt), never returns wrong bytes. Writes acknowledged with
// FlagSync, or followed by a successful Sync, are durable.

const (
	numStripes  = 256
	subDirs     = 256
	handleLimit = 512
)

type store struct {
	root string // DataDir/objects
	log  *slog.Logger

	stripes [numStripes]sync.RWMutex
	dirs    [subDirs]objDir
	cache   handleCache
	pool    *filePool
	objects atomic.Int64
	// noFallocate is set once the file system refuses fallocate.
	noFallocate atomic.Bool
	// noXattr is set once the file system refuses user extended
	// attributes: new objects get sidecars (checksums.go).
	noXattr atomic.Bool
	// edgeReads counts blocks a write read back to merge with (for tests).
	edgeReads atomic.Uint64
	// writeouts feeds runWriteouts (writeout.go), which closes
	// writeoutsDone when it returns and counts the bytes it submitted in
	// writtenOut (for tests).
	writeouts     chan writeoutSpan
	writeoutsDone chan struct{}
	writtenOut    atomic.Int64
	writeoutSeq   atomic.Uint64 // spans queued so far
}

// objDir tracks whether a directory has entries not yet made durable.
type objDir struct {
	mu    sync.Mutex
	dirty bool
}

// openStore prepares root (creating the 256 subdirectories) and counts the
// objects already there.
func openStore(root string, log *slog.Logger) (*store, error) {
	s := &store{root: root, log: log}
	s.cache.init(handleLimit)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("creating object directory: %w", err)
	}
	var count int64
	for i := range subDirs {
		dir := filepath.Join(root, fmt.Sprintf("%02x", i))
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("creating object directory: %w", err)
		}
		n, err := countObjects(dir)
		if err != nil {
			return nil, err
		}
		count += n
	}
	for _, dir := range []string{root, filepath.Dir(root)} {
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	pool, err := openPool(filepath.Join(root, "pool"), maxPooledFiles, log)
	if err != nil {
		return nil, err
	}
	s.pool = pool
	s.objects.Store(count)
	s.writeouts, s.writeoutsDone = make(chan writeoutSpan, writeoutQueue), make(chan struct{})
	go s.runWriteouts()
	return s, nil
}

// countObjects counts data files in one object directory, in batches so a
// huge directory does not need all its names in memory.
func countObjects(dir string) (int64, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, fmt.Errorf("counting objects: %w", err)
	}
	defer f.Close()
	var n int64
	for {
		names, err := f.Readdirnames(4096)
		for _, name := range names {
			if len(name) == 16 {
				if _, perr := strconv.ParseUint(name, 16, 64); perr == nil {
					n++
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return 0, fmt.Errorf("counting objects in %s: %w", dir, err)
		}
	}
}

func syncDir(dir string) error {
	d, err := openFile(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

func (s *store) stripe(obj uint64) *sync.RWMutex {
	return &s.stripes[(obj*0x9E3779B97F4A7C15)>>(64-8)]
}

func (s *store) dataPath(obj uint64) string {
	return filepath.Join(s.root, fmt.Sprintf("%02x", obj&0xff), fmt.Sprintf("%016x", obj))
}

// close closes every cached handle once the write-outs queued are done.
// No request may be running.
func (s *store) close() {
	close(s.writeouts)
	<-s.writeoutsDone
	s.cache.closeAll()
}

// handle is an object's open data file and its checksum slots.
type handle struct {
	obj  uint64
	data *os.File
	sums checksums
	// synced: the object may hold data made durable (it was synced, or
	// opened from disk).
	synced atomic.Bool
	// edges: blocks partly written, remembered (edges.go). Guarded by the
	// object's stripe lock, held exclusively.
	edges edgeMemory
	// writeout: written since the last early write-out (writeout.go).
	// Guarded like edges.
	writeout writeout
	// flushedSeq: the last span queued before this object's latest early
	// fdatasync started. Only runWriteouts uses it.
	flushedSeq uint64

	// Guarded by handleCache.mu.
	refs int
	elem *list.Element // nil when not in the cache
}

func (h *handle) closeFiles() {
	h.sums.close()
	h.data.Close()
}

// handleCache is a bounded LRU of open handles. Each user holds a
// reference; the cache holds one while the handle is cached; the files
// close when the last reference goes.
type handleCache struct {
	mu  sync.Mutex
	max int
	m   map[uint64]*handle
	lru list.List // front = most recently used
}

func (c *handleCache) init(max int) {
	c.max = max
	c.m = make(map[uint64]*handle)
}

// get returns a referenced cached handle, or nil.
func (c *handleCache) get(obj uint64) *handle {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.m[obj]
	if h == nil {
		return nil
	}
	h.refs++
	c.lru.MoveToFront(h.elem)
	return h
}

// add caches a freshly opened handle and returns a referenced handle for
// obj: h itself, or one another reader cached first (h is then closed).
func (c *handleCache) add(h *handle) *handle {
	var closing []*handle
	c.mu.Lock()
	if old := c.m[h.obj]; old != nil {
		old.refs++
		c.lru.MoveToFront(old.elem)
		c.mu.Unlock()
		h.closeFiles()
		return old
	}
	h.refs = 2 // the cache and the caller
	h.elem = c.lru.PushFront(h)
	c.m[h.obj] = h
	for c.lru.Len() > c.max {
		victim := c.lru.Back().Value.(*handle)
		if v := c.dropLocked(victim); v != nil {
			closing = append(closing, v)
		}
	}
	c.mu.Unlock()
	for _, v := range closing {
		v.closeFiles()
	}
	return h
}

// dropLocked removes h from the cache and returns it if it must be closed.
func (c *handleCache) dropLocked(h *handle) *handle {
	c.lru.Remove(h.elem)
	h.elem = nil
	delete(c.m, h.obj)
	h.refs--
	if h.refs == 0 {
		return h
	}
	return nil
}

// retain adds a reference to h, which the caller holds one on.
func (c *handleCache) retain(h *handle) {
	c.mu.Lock()
	h.refs++
	c.mu.Unlock()
}

// release drops a caller's reference.
func (c *handleCache) release(h *handle) {
	c.mu.Lock()
	h.refs--
	last := h.refs == 0
	c.mu.Unlock()
	if last {
		h.closeFiles()
	}
}

// remove drops obj from the cache (destroy).
func (c *handleCache) remove(obj uint64) {
	c.mu.Lock()
	var v *handle
	if h := c.m[obj]; h != nil {
		v = c.dropLocked(h)
	}
	c.mu.Unlock()
	if v != nil {
		v.closeFiles()
	}
}

func (c *handleCache) closeAll() {
	c.mu.Lock()
	var closing []*handle
	for _, h := range c.m {
		if v := c.dropLocked(h); v != nil {
			closing = append(closing, v)
		}
	}
	c.mu.Unlock()
	for _, v := range closing {
		v.closeFiles()
	}
}

// open returns a referenced handle for obj, or nil if the object does not
// exist and create is false. The caller holds obj's stripe, exclusively
// when create is true.
func (s *store) open(obj uint64, create bool) (*handle, error) {
	if h := s.cache.get(obj); h != nil {
		return h, nil
	}
	path := s.dataPath(obj)
	data, err := openFile(path, unix.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, nil
		}
		h, err := s.create(obj, path)
		if err != nil {
			return nil, fmt.Errorf("create object %016x: %w", obj, err)
		}
		return s.cache.add(h), nil
	}
	if err != nil {
		return nil, fmt.Errorf("open object %016x: %w", obj, err)
	}
	// An empty object may lack its sidecar header after a crash during
	// creation: nothing to complain about.
	size, err := fileSize(data)
	if err != nil {
		data.Close()
		return nil, err
	}
	sums, err := s.openSums(obj, data, size == 0)
	if err != nil {
		data.Close()
		return nil, err
	}
	h := &handle{obj: obj, data: data, sums: sums}
	h.synced.Store(true)
	return s.cache.add(h), nil
}

// create makes a new object: its data file (from the pool when it has
// one), then its checksum slots (inline, replacing any attribute the
// file had, or a sidecar emptied of anything a destroy that crashed
// half-way left). The files stay open in the returned handle: a small
// file's object is written once, so every open saved here is a large part
// of its cost.
func (s *store) create(obj uint64, path string) (*handle, error) {
	data, err := s.pool.take(path)
	if err != nil {
		return nil, err
	}
	if data == nil {
		data, err = openFile(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644)
		if err != nil {
			return nil, err
		}
	}
	sums, err := s.newSums(obj, data)
	if err != nil {
		data.Close()
		return nil, err
	}
	s.objects.Add(1)
	s.markDirty(obj)
	return &handle{obj: obj, data: data, sums: sums}, nil
}

// markDirty notes that obj's directory has an entry not yet durable.
func (s *store) markDirty(obj uint64) {
	d := &s.dirs[obj&0xff]
	d.mu.Lock()
	d.dirty = true
	d.mu.Unlock()
}

// openCRC opens an object's sidecar, writing the header when it is empty.
// A missing sidecar of an object holding data is recreated empty, so every
// block holding data reads as corrupt rather than unchecked; fresh says
// the object is new or empty, so a missing sidecar is expected.
func (s *store) openCRC(obj uint64, path string, fresh bool) (*sidecar, error) {
	f, err := openFile(path, unix.O_RDWR|unix.O_CREAT, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open checksums of object %016x: %w", obj, err)
	}
	var hdr [crcHeaderSize]byte
	n, err := f.ReadAt(hdr[:], 0)
	if n == 0 && (err == nil || errors.Is(err, io.EOF)) {
		if !fresh {
			s.log.Error("checksum file missing or empty; blocks holding data will read as corrupt", "object", fmt.Sprintf("%016x", obj))
		}
		return startSidecar(obj, f)
	}
	if n == crcHeaderSize {
		if bs, ok := parseCRCHeader(hdr[:]); ok {
			return &sidecar{obj: obj, f: f, bs: bs}, nil
		}
	}
	f.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read checksum header of object %016x: %w", obj, err)
	}
	s.log.Error("checksum file has a bad header", "object", fmt.Sprintf("%016x", obj), "path", path)
	return nil, api.Errorf(api.CodeCorrupt, "object %016x: checksum file has a bad header", obj)
}

func fileSize(f *os.File) (int64, error) {
	st, err := fileStat(f)
	return st.Size, err
}

func fileStat(f *os.File) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return st, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return st, nil
}

// corrupt logs a failed block and returns the wire error.
func (s *store) corrupt(obj uint64, block, bs int64, m *blockMismatch) error {
	attrs := []any{
		"object", fmt.Sprintf("%016x", obj),
		"block", block,
		"block_size", bs,
		"offset", block * bs,
		"actual", fmt.Sprintf("%08x", m.actual),
	}
	switch m.state {
	case slotHole:
		attrs = append(attrs, "expected", "hole (all zeros)")
	case slotDamaged:
		attrs = append(attrs, "expected", "none: found damaged before, when its checksums were split")
	case slotBad:
		attrs = append(attrs, "expected", "none: checksum slot damaged", "slot_crc", fmt.Sprintf("%08x", m.expected))
	default:
		attrs = append(attrs, "expected", fmt.Sprintf("%08x", m.expected))
	}
	s.log.Error("checksum mismatch", attrs...)
	return api.Errorf(api.CodeCorrupt, "object %016x block %d (offset %d): checksum mismatch", obj, block, block*bs)
}

// readBlock reads block b of an object of the given size into buf (which is
// zeroed past the object's end, up to the block size) and verifies it
// against slot.
func (s *store) readBlock(h *handle, b, size int64, buf, slot []byte) error {
	bs := h.sums.blockSize()
	start := b * bs
	n := min(bs, max(size-start, 0))
	if n > 0 {
		if _, err := h.data.ReadAt(buf[:n], start); err != nil {
			return fmt.Errorf("read object %016x block %d: %w", h.obj, b, err)
		}
	}
	clear(buf[n:bs])
	if m := verifyBlock(buf[:n], slot, bs); m != nil {
		return s.corrupt(h.obj, b, bs, m)
	}
	return nil
}

// reserve allocates disk space for [off, off+n) of f without changing its
// size, so that a full disk fails the request before anything is
// overwritten.
func (s *store) reserve(f *os.File, off, n int64) error {
	if n <= 0 || s.noFallocate.Load() {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, n)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
		s.noFallocate.Store(true)
		s.log.Warn("file system does not support fallocate; a full disk may now fail writes half-way")
		return nil
	case errors.Is(err, unix.EINTR):
		return s.reserve(f, off, n)
	}
	return fmt.Errorf("reserving %d bytes at %d of %s: %w", n, off, filepath.Base(f.Name()), err)
}

// ampleRoom reports whether f's file system has so much space available
// that a write of n bytes cannot run out of it: beyond twice n (data,
// checksums, file system metadata) at least 256 MiB or 2% of the file
// system, whichever is more, remains for the writes running at the same
// time. A statfs of an open file costs about a microsecond.
func ampleRoom(f *os.File, n int64) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return false
	}
	return roomAfter(int64(st.Bavail)*st.Bsize, int64(st.Blocks)*st.Bsize, n)
}

// roomAfter is ampleRoom's arithmetic: avail and total bytes, a write of n.
func roomAfter(avail, total, n int64) bool {
	margin := max(256<<20, total/50)
	return avail-2*n > margin
}

// write stores p at off in obj, creating it, and returns the object size.
func (s *store) write(ctx context.Context, obj uint64, off int64, p []byte, durable bool) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	mu := s.stripe(obj)
	mu.Lock()
	defer mu.Unlock()
	h, err := s.open(obj, true)
	if err != nil {
		return 0, err
	}
	defer s.cache.release(h)
	st, err := fileStat(h.data)
	if err != nil {
		return 0, err
	}
	size := st.Size
	if len(p) == 0 {
		return size, s.syncIf(h, durable)
	}
	h.edges.current(&st)
	end := off + int64(len(p))
	// A slot the attribute cannot hold moves them all to a sidecar first.
	if _, ok := h.sums.(*inline); ok && end > inlineBlocks*inlineBlockSize {
		if err := s.promote(h, size); err != nil {
			return 0, err
		}
	}
	bs := h.sums.blockSize()
	first, last := off/bs, (end-1)/bs
	nb := last - first + 1

	slotsBuf := iobuf.Get(int(nb) * slotSize)
	defer iobuf.Put(slotsBuf)
	slots := *slotsBuf

	// Until the write is done, what the handle remembers of its blocks may
	// be out of date: forget it all unless the write succeeds.
	done := false
	defer func() {
		if !done {
			h.edges.forgetAll()
		}
	}()

	// Edge blocks the write does not cover fully: patch the checksum of a
	// block known to hold zeros where the write lands (edges.go); else
	// read, verify, merge.
	var edges [2]edgeBlock
	var edgeBufs [2]*[]byte
	defer func() {
		for _, b := range edgeBufs {
			if b != nil {
				iobuf.Put(b)
			}
		}
	}()
	var oldSlot [slotSize]byte
	for i, b := range [2]int64{first, last} {
		if i == 1 && last == first {
			break
		}
		bStart := b * bs
		if off <= bStart && end >= bStart+bs {
			continue // fully covered
		}
		lo, hi := max(off, bStart)-bStart, min(end, bStart+bs)-bStart
		part := p[bStart+lo-off : bStart+hi-off]
		e := &edges[i]
		known, ok := holeBlock(bs), true // past the end: zeros until now
		if bStart < size {
			if err := h.sums.read(b, oldSlot[:]); err != nil {
				return 0, err
			}
			known, ok = h.edges.lookup(b, bs, int32(lo), int32(hi), oldSlot[:], h.data)
		}
		if ok {
			*e = known
			e.crc = patchCRC(known.crc, bs, int(lo), part)
		} else {
			s.edgeReads.Add(1)
			eb := iobuf.Get(int(bs))
			edgeBufs[i] = eb
			buf := *eb
			if err := s.readBlock(h, b, size, buf, oldSlot[:]); err != nil {
				return 0, err
			}
			copy(buf[lo:hi], part)
			*e = edgeBlock{crc: blockCRC(buf, bs)}
			if tail := size - bStart; tail < bs {
				e.zeros[0], e.runs = [2]int32{int32(tail), int32(bs)}, 1
			}
		}
		e.written(int32(lo), int32(hi))
		putSlot(slots[(b-first)*slotSize:], e.crc)
	}
	for b := first; b <= last; b++ {
		bStart := b * bs
		if off <= bStart && end >= bStart+bs {
			putSlot(slots[(b-first)*slotSize:], blockCRC(p[bStart-off:bStart-off+bs], bs))
		}
	}

	// Nothing has changed yet. Short of room, reserve the space first so
	// that a full disk refuses the write whole. With ample room, skip it:
	// on ext4 every reservation leaves unwritten extents that writeback
	// must convert, which made fsync after small strided writes six times
	// slower here.
	if !ampleRoom(h.data, int64(len(p))) {
		if err := s.reserve(h.data, off, int64(len(p))); err != nil {
			return 0, err
		}
		if err := h.sums.reserve(s, first, nb); err != nil {
			return 0, err
		}
	}
	if first > blocksFor(size, bs) {
		// Blocks between the old end and this write become holes: drop
		// any slot a crashed truncation may have left there.
		if err := h.sums.truncate(blocksFor(size, bs)); err != nil {
			return 0, err
		}
	}
	if _, err := h.data.WriteAt(p, off); err != nil {
		return 0, fmt.Errorf("write object %016x: %w", obj, err)
	}
	if err := h.sums.write(first, slots); err != nil {
		return 0, err
	}
	h.edges.forget(first, last)
	h.edges.remember(first, edges[0])
	if last != first {
		h.edges.remember(last, edges[1])
	}
	h.edges.remembered(h.data)
	done = true
	if lo, hi, due := h.writeout.wrote(off, end); due {
		s.queueWriteout(h, lo, hi)
	}
	return max(size, end), s.syncIf(h, durable)
}

func (s *store) syncIf(h *handle, durable bool) error {
	if !durable {
		return nil
	}
	return s.syncHandle(h)
}

// syncHandle makes the object's data, checksums and directory entry durable.
func (s *store) syncHandle(h *handle) error {
	if err := h.sums.sync(h.data); err != nil {
		return err
	}
	h.synced.Store(true)
	return s.syncDirOf(h)
}

// syncDirOf makes the directory entries of h's files durable.
func (s *store) syncDirOf(h *handle) error {
	d := &s.dirs[h.obj&0xff]
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dirty {
		if err := syncDir(filepath.Dir(h.data.Name())); err != nil {
			return err
		}
		d.dirty = false
	}
	return nil
}

func fdatasync(f *os.File) error { return retryEINTR(unix.Fdatasync, f) }

// retryEINTR runs a sync call on f until a signal does not interrupt it.
func retryEINTR(sync func(fd int) error, f *os.File) error {
	for {
		if err := sync(int(f.Fd())); err != unix.EINTR {
			return err
		}
	}
}

// readResult is a verified read: payload holds the bytes asked for, in
// *buf (from iobuf, nil for a read into a shared region or of nothing)
// from offset start on, or in the shared region from start on.
type readResult struct {
	buf     *[]byte
	start   int
	payload []byte
	size    int64
}

// read returns up to length bytes at off of obj, verified. The blocks
// covering them are read into into when they fit there, else into a buffer
// of exactly their size (so that a 1 MiB read takes a 1 MiB buffer) — or,
// with intoOnly (into is a connection's shared region, see api.OSTShare,
// where the client looks for them), the read fails. The caller must give
// res.buf back (iobuf.Put) when it is not nil.
func (s *store) read(ctx context.Context, obj uint64, off int64, length int, into []byte, intoOnly bool) (readResult, error) {
	if err := ctx.Err(); err != nil {
		return readResult{}, err
	}
	mu := s.stripe(obj)
	mu.RLock()
	defer mu.RUnlock()
	h, err := s.open(obj, false)
	if err != nil || h == nil {
		return readResult{}, err
	}
	defer s.cache.release(h)
	size, err := fileSize(h.data)
	if err != nil {
		return readResult{}, err
	}
	if off >= size || length == 0 {
		return readResult{size: size}, nil
	}
	end := min(off+int64(length), size)
	bs := h.sums.blockSize()
	first, last := off/bs, (end-1)/bs
	nb := last - first + 1
	rdStart := first * bs
	rdEnd := min((last+1)*bs, size)

	var bp *[]byte
	var data []byte
	switch {
	case rdEnd-rdStart <= int64(len(into)):
		data = into[:rdEnd-rdStart]
	case intoOnly:
		return readResult{}, api.Errorf(api.CodeInvalid, "a read of %d bytes at %d does not fit the %d-byte shared region", length, off, len(into))
	default:
		bp = iobuf.Get(int(rdEnd - rdStart))
		data = *bp
	}
	ok := false
	defer func() {
		if !ok && bp != nil {
			iobuf.Put(bp)
		}
	}()
	slotsBuf := iobuf.Get(int(nb) * slotSize)
	defer iobuf.Put(slotsBuf)
	slots := *slotsBuf
	if _, err := h.data.ReadAt(data, rdStart); err != nil {
		if errors.Is(err, io.EOF) {
			return readResult{}, api.Errorf(api.CodeIO, "object %016x changed size under a read", obj)
		}
		return readResult{}, fmt.Errorf("read object %016x: %w", obj, err)
	}
	if err := h.sums.read(first, slots); err != nil {
		return readResult{}, err
	}
	for b := first; b <= last; b++ {
		lo := (b - first) * bs
		hi := min(lo+bs, int64(len(data)))
		if m := verifyBlock(data[lo:hi], slots[(b-first)*slotSize:], bs); m != nil {
			return readResult{}, s.corrupt(obj, b, bs, m)
		}
	}
	ok = true
	start := int(off - rdStart)
	return readResult{buf: bp, start: start, payload: data[start : end-rdStart], size: size}, nil
}

// punch truncates obj to size (extending it with a hole when larger),
// creating it if absent and size is not 0.
func (s *store) punch(ctx context.Context, obj uint64, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	mu := s.stripe(obj)
	mu.Lock()
	defer mu.Unlock()
	h, err := s.open(obj, size > 0)
	if err != nil || h == nil {
		return err
	}
	defer s.cache.release(h)
	h.edges.forgetAll()
	old, err := fileSize(h.data)
	if err != nil {
		return err
	}
	switch {
	case size == old:
		return nil
	case size > old:
		return extend(h, obj, old, size)
	}
	bs := h.sums.blockSize()
	b, within := size/bs, size%bs
	var slot [slotSize]byte
	rewrite := false
	if within != 0 {
		// The block holding the new end: verify what is kept, then its
		// checksum covers the kept bytes and zeros.
		eb := iobuf.Get(int(bs))
		defer iobuf.Put(eb)
		buf := *eb
		if err := h.sums.read(b, slot[:]); err != nil {
			return err
		}
		if err := s.readBlock(h, b, old, buf, slot[:]); err != nil {
			return err
		}
		// A hole stays one: its kept bytes are zeros too.
		if _, state := getSlot(slot[:]); state != slotHole {
			putSlot(slot[:], blockCRC(buf[:within], bs))
			rewrite = true
		}
	}
	if err := h.data.Truncate(size); err != nil {
		return fmt.Errorf("truncate object %016x: %w", obj, err)
	}
	if rewrite {
		if err := h.sums.write(b, slot[:]); err != nil {
			return err
		}
	}
	return h.sums.truncate(blocksFor(size, bs))
}

// allocate reserves disk space for [off, off+n) of obj (fallocate), and
// unless keepSize grows the object to cover it. New blocks are holes: their
// checksum slots stay empty and they read as zeros.
func (s *store) allocate(ctx context.Context, obj uint64, off, n int64, keepSize bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if off < 0 || n <= 0 || off+n < off || off+n > 1<<62 {
		return api.Errorf(api.CodeInvalid, "allocate of %d bytes at %d", n, off)
	}
	mu := s.stripe(obj)
	mu.Lock()
	defer mu.Unlock()
	h, err := s.open(obj, true)
	if err != nil {
		return err
	}
	defer s.cache.release(h)
	if err := s.reserve(h.data, off, n); err != nil {
		return err
	}
	if keepSize {
		return nil
	}
	old, err := fileSize(h.data)
	if err != nil || off+n <= old {
		return err
	}
	return extend(h, obj, old, off+n)
}

// extend grows an object from old to size bytes with the object's lock
// held. The block holding the old end keeps its checksum (bytes past the
// end already counted as zeros); new blocks are holes. Any stale slot past
// the old end is dropped first.
func extend(h *handle, obj uint64, old, size int64) error {
	if err := h.sums.truncate(blocksFor(old, h.sums.blockSize())); err != nil {
		return err
	}
	if err := h.data.Truncate(size); err != nil {
		return fmt.Errorf("extend object %016x: %w", obj, err)
	}
	return nil
}

// sync makes obj durable; an absent object is trivially so.
func (s *store) sync(ctx context.Context, obj uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	mu := s.stripe(obj)
	mu.RLock()
	defer mu.RUnlock()
	h, err := s.open(obj, false)
	if err != nil || h == nil {
		return err
	}
	defer s.cache.release(h)
	return s.syncHandle(h)
}

// size returns obj's size, 0 if absent.
func (s *store) size(ctx context.Context, obj uint64) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	mu := s.stripe(obj)
	mu.RLock()
	defer mu.RUnlock()
	h, err := s.open(obj, false)
	if err != nil || h == nil {
		return 0, err
	}
	defer s.cache.release(h)
	return fileSize(h.data)
}

// destroy removes obj; an absent object is fine. The data file goes first,
// into the pool or unlinked: once it is gone the object is gone, and a
// sidecar left behind by a crash is reset when the id is created again.
func (s *store) destroy(ctx context.Context, obj uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	mu := s.stripe(obj)
	mu.Lock()
	defer mu.Unlock()
	s.cache.remove(obj)
	path := s.dataPath(obj)
	var err error
	if !s.pool.put(path) {
		err = unlink(path)
	}
	switch {
	case err == nil:
		s.objects.Add(-1)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("destroy object %016x: %w", obj, err)
	}
	if err := unlink(path + ".crc"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("destroy checksums of object %016x: %w", obj, err)
	}
	return nil
}

// unlink removes the file at path. Unlike os.Remove it does not try rmdir
// when that fails: destroying an object never written (an empty file's:
// objects are made by the first write) then costs one failed system call
// per path, not two.
func unlink(path string) error {
	if err := unix.Unlink(path); err != nil {
		return &fs.PathError{Op: "unlink", Path: path, Err: err}
	}
	return nil
}

// openFile opens path as os.OpenFile does, without offering the
// descriptor to the runtime's poller: os.OpenFile makes every descriptor
// non-blocking (two fcntl calls), registers it with epoll, which refuses a
// regular file or directory, and makes it blocking again (two more) — five
// wasted system calls on every object opened from disk. os.NewFile costs
// one (F_GETFL).
func openFile(path string, flag int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Open(path, flag|unix.O_CLOEXEC, perm)
		if err == nil {
			return os.NewFile(uintptr(fd), path), nil
		}
		if err != unix.EINTR {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
	}
}

// statfs reports the capacity of the file system holding dir.
func (s *store) statfs(dir string, index uint32) (api.OSTStatfs, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return api.OSTStatfs{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	return api.OSTStatfs{
		Index:   index,
		Total:   st.Blocks * bs,
		Free:    st.Bfree * bs,
		Avail:   st.Bavail * bs,
		Objects: uint64(max(s.objects.Load(), 0)),
	}, nil
}
