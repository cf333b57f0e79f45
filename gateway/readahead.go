package gateway

import (
	"context"
	"time"

	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
)

// Strided read-ahead, after Lustre's llite: a reader that skips forward
// through a file in records (IOR's shared-file shape, a hyperslab of an
// HDF5 array, every other frame of a video) defeats the kernel's
// read-ahead, which only follows sequential reads, so each record is one
// FUSE READ waiting on an OST round trip. Once an open file has read
// raMinRuns records that each skip a little way forward, the bytes after
// them are fetched in the background in large chunks, gaps included (the
// OSTs read whole checksum blocks anyway, and one large read costs less
// than several small ones), and the READs that follow are served from
// memory.
//
// Prefetched bytes are as coherent as the kernel's page cache: a write or
// truncate through this mount drops them (node.dataGen), as does meta
// showing a change another client made, and none is used more than
// raMaxAge after it was fetched (file data has no locks of its own yet).
const (
	raMaxAge  = time.Second
	raMinRuns = 2       // skipping reads before prefetching
	raMaxGap  = 4       // a skip of at most this many read lengths
	raJitter  = 8 << 10 // skips and lengths this close count as steady
	// (the kernel widens each read to whole pages)
	raMaxRecord   = 256 << 10 // larger reads need no help
	raChunk       = 256 << 10 // bytes per prefetch
	raWindowBytes = 1 << 20   // prefetched ahead of one open file's reader
	raTotalBytes  = 64 << 20  // prefetched across the mount
)

// readAhead is one open file's skip detector and prefetched chunks.
// Guarded by the owning node's mu.
type readAhead struct {
	lastEnd int64
	lastGap int64
	lastLen int
	runs    int
	window  []*prefetch // in offset order, contiguous
}

// prefetch is one chunk read ahead. done is closed once data or err is set.
type prefetch struct {
	off     int64
	length  int
	gen     uint64
	at      time.Time
	done    chan struct{}
	buf     *[]byte // from iobuf
	err     error
	dropped bool // left the window; its memory is returned when done
}

func (p *prefetch) end() int64 { return p.off + int64(p.length) }

// serveAhead fills dest with the bytes at off from the open file's
// prefetched chunks when they hold all of them, and says whether they did.
// It waits for chunks still in flight. Called without n.mu.
func (n *node) serveAhead(h *handle, dest []byte, off int64) bool {
	end := off + int64(len(dest))
	n.mu.Lock()
	var parts []*prefetch
	at := off
	for _, p := range h.ra.window {
		if p.off <= at && at < p.end() {
			parts = append(parts, p)
			at = p.end()
			if at >= end {
				break
			}
		}
	}
	n.mu.Unlock()
	if at < end {
		return false
	}
	for _, p := range parts {
		<-p.done
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	copied := 0
	for _, p := range parts {
		if !n.usableLocked(p) {
			return false
		}
		copied += copy(dest[copied:], (*p.buf)[off+int64(copied)-p.off:])
	}
	return true
}

// noteRead feeds a read to the skip detector and, once reads keep skipping
// forward, keeps raWindowBytes after this one prefetched. size is the file
// size. Called without n.mu, before the read is served.
func (n *node) noteRead(h *handle, l *api.Layout, off int64, length int, size int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ra := &h.ra
	gap := off - ra.lastEnd
	steady := abs(gap-ra.lastGap) <= raJitter && abs(int64(length-ra.lastLen)) <= raJitter
	if gap > 0 && gap <= raMaxGap*int64(length) && length <= raMaxRecord && steady {
		ra.runs++
	} else {
		ra.runs = 0
	}
	ra.lastEnd, ra.lastGap, ra.lastLen = off+int64(length), gap, length
	// What lies behind the reader, or everything if it went elsewhere,
	// and what a change made stale (the oldest chunks, so the window stays
	// contiguous).
	keep := ra.window[:0]
	for _, p := range ra.window {
		if ra.runs > 0 && p.end() > off && n.usableLocked(p) {
			keep = append(keep, p)
		} else {
			n.dropLocked(p)
		}
	}
	clear(ra.window[len(keep):])
	ra.window = keep
	// Readers of one file through one mount share the kernel's page cache,
	// whose read-ahead serves them together (IOR's readers on one client):
	// prefetching for each would fetch every byte once per reader.
	if ra.runs < raMinRuns || n.readers > 1 || len(n.inflight) > 0 || len(n.pending) > 0 {
		return
	}
	next := ra.lastEnd
	if k := len(ra.window); k > 0 {
		next = max(next, ra.window[k-1].end())
	}
	for ; next < min(size, ra.lastEnd+raWindowBytes); next += raChunk {
		chunk := int(min(raChunk, size-next))
		if !n.gw.aheadBytes.TryAcquire(int64(chunk)) {
			return
		}
		p := &prefetch{off: next, length: chunk, gen: n.dataGen, at: time.Now(), done: make(chan struct{})}
		ra.window = append(ra.window, p)
		go n.fetchAhead(l, p)
	}
}

// fetchAhead reads one chunk into a buffer from iobuf.
func (n *node) fetchAhead(l *api.Layout, p *prefetch) {
	buf := iobuf.Get(p.length)
	r, err := n.gw.readExtent(context.Background(), n.ino(), l, p.off, *buf)
	if err == nil {
		*buf, _ = r.Bytes(*buf)
		r.Done()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p.buf, p.err = buf, err
	close(p.done)
	if p.dropped {
		n.releaseLocked(p)
	}
}

// usableLocked says whether p may still serve reads: not dropped, not
// failed, older than no change to the file's bytes, and no older than
// attributes are kept.
func (n *node) usableLocked(p *prefetch) bool {
	return !p.dropped && p.err == nil && p.gen == n.dataGen && time.Since(p.at) < raMaxAge
}

// dropLocked takes p out of use; its bytes go back to the mount's budget
// now, or when its read completes.
func (n *node) dropLocked(p *prefetch) {
	if p.dropped {
		return
	}
	p.dropped = true
	select {
	case <-p.done:
		n.releaseLocked(p)
	default: // fetchAhead releases it
	}
}

// releaseLocked returns a dropped, completed chunk's memory: its buffer
// to iobuf and its bytes to the mount's budget.
func (n *node) releaseLocked(p *prefetch) {
	iobuf.Put(p.buf)
	p.buf = nil
	n.gw.aheadBytes.Release(int64(p.length))
}

// releaseAhead drops all of an open file's prefetched chunks (at close).
func (n *node) releaseAhead(h *handle) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range h.ra.window {
		n.dropLocked(p)
	}
	h.ra = readAhead{}
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
