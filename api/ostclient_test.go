package api

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedOST is a minimal OST for the client's own tests: it answers every
// request with success, but only once the test lets it (release) unless
// it is open, and reports each request's arrival and the most it has had
// in hand at once.
type gatedOST struct {
	ln       net.Listener
	arrivals chan struct{}
	release  chan struct{}
	open     atomic.Bool

	mu          sync.Mutex
	inHand, max int
}

func startGatedOST(t *testing.T) *gatedOST {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &gatedOST{ln: ln, arrivals: make(chan struct{}, 1024), release: make(chan struct{}, 1024)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go o.serve(c)
		}
	}()
	return o
}

func (o *gatedOST) serve(c net.Conn) {
	defer c.Close()
	var hdr [ReqHeaderSize]byte
	scratch := make([]byte, 256)
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		h, err := DecodeReqHeader(hdr[:])
		if err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, c, int64(h.PayloadLen)); err != nil {
			return
		}
		o.mu.Lock()
		o.inHand++
		o.max = max(o.max, o.inHand)
		o.mu.Unlock()
		if !o.open.Load() {
			o.arrivals <- struct{}{}
			<-o.release
		}
		o.mu.Lock()
		o.inHand--
		o.mu.Unlock()
		if WriteResponse(c, scratch, 0, nil, nil) != nil {
			return
		}
	}
}

// await waits for n arrivals, failing the test after a generous bound.
func (o *gatedOST) await(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-o.arrivals:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d requests reached the OST", i, n)
		}
	}
}

// TestOSTClientBoundsRequestsInFlight: requests beyond MaxInFlight wait
// for one in flight to end rather than reaching the OST on connections of
// their own, and every one of them completes; after many requests have
// taken connections from the pool and given them back concurrently, all
// MaxInFlight slots are still there.
func TestOSTClientBoundsRequestsInFlight(t *testing.T) {
	const limit, requests = 3, 20
	o := startGatedOST(t)
	c := NewOSTClient(10 * time.Second)
	c.MaxInFlight = limit
	defer c.Close()
	addr := o.ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	o.open.Store(true)
	var churn sync.WaitGroup
	for w := 0; w < 2*limit; w++ {
		churn.Go(func() {
			for i := 0; i < 300; i++ {
				if err := c.Write(ctx, addr, 1, int64(i), []byte("z"), false); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	churn.Wait()
	o.open.Store(false)

	for round := 0; round < 2; round++ {
		errs := make(chan error, requests)
		for i := 0; i < requests; i++ {
			go func() { errs <- c.Write(ctx, addr, 1, int64(i)*100, make([]byte, 100), false) }()
		}
		o.await(t, limit)
		select {
		case <-o.arrivals:
			t.Fatalf("round %d: a request beyond the %d in flight reached the OST", round, limit)
		case <-time.After(100 * time.Millisecond):
		}
		// Each request let go lets exactly one more in.
		for i := limit; i < requests; i++ {
			o.release <- struct{}{}
			o.await(t, 1)
		}
		for i := 0; i < limit; i++ {
			o.release <- struct{}{}
		}
		for i := 0; i < requests; i++ {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		o.mu.Lock()
		peak := o.max
		o.mu.Unlock()
		if peak > limit {
			t.Fatalf("round %d: the OST had %d requests at once, bound %d", round, peak, limit)
		}
	}
}

// TestOSTClientWaitForSlotEndsWithContext: a request waiting for a slot
// gives up when its context ends.
func TestOSTClientWaitForSlotEndsWithContext(t *testing.T) {
	o := startGatedOST(t)
	c := NewOSTClient(10 * time.Second)
	c.MaxInFlight = 1
	defer c.Close()
	addr := o.ln.Addr().String()
	first := make(chan error, 1)
	go func() { first <- c.Write(context.Background(), addr, 1, 0, []byte("x"), false) }()
	o.await(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.Write(ctx, addr, 1, 1, []byte("y"), false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting request: %v, want context.DeadlineExceeded", err)
	}
	o.release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}
