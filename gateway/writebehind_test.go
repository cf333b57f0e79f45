package gateway

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
	"golang.org/x/sync/semaphore"
)

// domRecorder stands in for meta in these unit tests: it keeps the offsets
// of the writes to the Data-on-MDT region it is sent, in order, and can
// hold one back.
type domRecorder struct {
	mu   sync.Mutex
	offs []int64
	// hold, if set, is waited for before a write at holdOff is recorded.
	hold    chan struct{}
	holdOff int64
	arrived chan struct{} // closed when the held write arrives
	// recorded, if set, gets the offset of each write as it is kept.
	recorded chan int64
	// gate, if set, is waited for before any write is recorded.
	gate chan struct{}
	// image is the region's bytes as written.
	image []byte
}

func (m *domRecorder) ServeMeta(_, op string, req any) (any, error) {
	w, ok := req.(api.DoMWriteReq)
	if op != api.OpDoMWrite || !ok {
		return nil, api.Errorf(api.CodeInvalid, "unexpected %s %T", op, req)
	}
	if m.hold != nil && w.Off == m.holdOff {
		close(m.arrived)
		<-m.hold
	}
	if m.gate != nil {
		<-m.gate
	}
	m.mu.Lock()
	m.offs = append(m.offs, w.Off)
	if end := int(w.Off) + len(w.Data); end > len(m.image) {
		m.image = append(m.image, make([]byte, end-len(m.image))...)
	}
	copy(m.image[w.Off:], w.Data)
	m.mu.Unlock()
	if m.recorded != nil {
		m.recorded <- w.Off
	}
	return nil, nil
}

func (m *domRecorder) offsets() []int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.offs)
}

// writeBehindNode is a node of a gateway whose meta is m, with a layout
// that keeps its first 64 KiB on meta.
func writeBehindNode(m *domRecorder) (*node, *api.Layout) {
	g := &Gateway{
		log:        slog.New(slog.DiscardHandler),
		meta:       api.NewMetaClient(nil, "test", time.Minute),
		writeSlots: semaphore.NewWeighted(maxWriteBehind),
	}
	g.meta.Local = m
	n := &node{gw: g}
	n.wbDone = sync.NewCond(&n.mu)
	return n, &api.Layout{DoMSize: 64 << 10}
}

// queueUnstarted puts a write of data at off in flight as sendLocked does,
// but without the goroutine that would run it: as if it had not been
// scheduled yet.
func queueUnstarted(t *testing.T, n *node, l *api.Layout, off int64, data []byte) *writeBehind {
	t.Helper()
	if err := n.gw.writeSlots.Acquire(context.Background(), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	buf := iobuf.Get(len(data))
	copy(*buf, data)
	w := &writeBehind{ext: extent{off, off + int64(len(data))}, layout: l, data: *buf, buf: buf}
	n.mu.Lock()
	n.inflight = append(n.inflight, w)
	n.mu.Unlock()
	return w
}

// waitWritesWithin runs waitWrites(e) and fails the test if it has not
// returned within 30 s (it would wait forever for a write nobody runs).
func waitWritesWithin(t *testing.T, n *node, e *extent) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.waitWrites(e) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waitWrites: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waitWrites did not return: it waited for a write whose goroutine never ran")
	}
}

// TestWaiterRunsUnstartedWrite: a flush, fsync or read that waits for a
// write in flight whose goroutine has not run yet runs the write itself,
// once, and leaves alone the writes it does not wait for; a write already
// running elsewhere it waits for and does not run again.
func TestWaiterRunsUnstartedWrite(t *testing.T) {
	m := &domRecorder{}
	n, l := writeBehindNode(m)
	first := queueUnstarted(t, n, l, 0, []byte("first"))
	other := queueUnstarted(t, n, l, 4096, []byte("elsewhere"))

	waitWritesWithin(t, n, &extent{0, 100})
	if got := m.offsets(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("waiting for bytes [0, 100): meta got writes at %v, want one at 0", got)
	}
	if !first.claimed.Load() || other.claimed.Load() {
		t.Fatalf("claimed: the awaited write %v, the other %v; want true, false", first.claimed.Load(), other.claimed.Load())
	}
	n.mu.Lock()
	left := len(n.inflight)
	n.mu.Unlock()
	if left != 1 {
		t.Fatalf("%d writes in flight after the wait, want the other one only", left)
	}

	// A write some goroutine already runs: waited for, not run twice.
	m.hold, m.holdOff, m.arrived = make(chan struct{}), 8192, make(chan struct{})
	m.recorded = make(chan int64, 3)
	running := queueUnstarted(t, n, l, 8192, []byte("running"))
	running.claimed.Store(true)
	go n.runWrite(running)
	<-m.arrived
	done := make(chan error, 1)
	go func() { done <- n.waitWrites(nil) }()
	// The wait runs the other write itself; the held one it must wait for.
	if off := <-m.recorded; off != 4096 {
		t.Fatalf("meta got a write at %d while one at 8192 was held, want the one at 4096", off)
	}
	select {
	case err := <-done:
		t.Fatalf("waitWrites returned (%v) while a write it covers was still running", err)
	default:
	}
	close(m.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := m.offsets()
	if len(got) != 3 || got[0] != 0 || got[1] != 4096 || got[2] != 8192 {
		t.Fatalf("meta got writes at %v, want 0, 4096, 8192, each once", got)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.inflight) != 0 {
		t.Fatalf("%d writes still in flight", len(n.inflight))
	}
}
