package gateway

import (
	"context"
	"fmt"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stria/stria/api"
)

// forEach runs fn for i in [0, n) in parallel and returns the first error.
// One item runs inline: the common 1-stripe case pays no goroutine.
func forEach(n int, fn func(i int) error) error {
	if n == 1 {
		return fn(0)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	wg.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			defer wg.Done()
			if err := fn(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// writeExtent writes data at file offset off, each stripe piece to its OST
// in parallel. It returns the stripes it touched as a bit set over
// Layout.Objects indices (callers keep it to know what fsync must sync).
func (g *Gateway) writeExtent(ctx context.Context, l *api.Layout, off int64, data []byte, touched map[int]bool) error {
	pieces := l.MapExtent(off, len(data), nil)
	err := forEach(len(pieces), func(i int) error {
		p := pieces[i]
		obj := l.Objects[p.Stripe]
		addr, err := g.ostAddr(obj.OST)
		if err != nil {
			return err
		}
		if err := g.ost.Write(ctx, addr, obj.ObjID, p.ObjOff, data[p.BufOff:p.BufOff+p.Len], false); err != nil {
			return fmt.Errorf("write stripe %d (OST %d): %w", p.Stripe, obj.OST, err)
		}
		return nil
	})
	for _, p := range pieces {
		touched[p.Stripe] = true
	}
	return err
}

// readExtent reads len(dest) bytes at file offset off. Bytes an object does
// not hold (holes, or past its end inside the file size) read as zeros.
// Stripes on OSTs of this machine come straight from the memory they share
// with us (see api.OSTClient.ReadShared), the others into dest; the result
// keeps the shared memory until go-fuse has written it to the kernel.
func (g *Gateway) readExtent(ctx context.Context, l *api.Layout, off int64, dest []byte) (*stripeRead, error) {
	ctx = context.WithoutCancel(ctx) // see metaCall; OSTTimeout bounds it
	pieces := l.MapExtent(off, len(dest), nil)
	r := &stripeRead{parts: make([][]byte, len(pieces)), dones: make([]func(), len(pieces))}
	err := forEach(len(pieces), func(i int) error {
		p := pieces[i]
		obj := l.Objects[p.Stripe]
		addr, err := g.ostAddr(obj.OST)
		if err != nil {
			return err
		}
		data, done, err := g.ost.ReadShared(ctx, addr, obj.ObjID, p.ObjOff, dest[p.BufOff:p.BufOff+p.Len])
		if err != nil {
			g.log.Warn("read failed", "ost", obj.OST, "objid", obj.ObjID, "offset", p.ObjOff, "err", err)
			return fmt.Errorf("read stripe %d (OST %d): %w", p.Stripe, obj.OST, err)
		}
		r.parts[i], r.dones[i] = data, done
		return nil
	})
	if err != nil {
		r.Done()
		return nil, err
	}
	// Pieces come in file order; a short one ends in a hole or before the
	// object's end: zeros.
	slices := make([][]byte, 0, len(pieces))
	for i, p := range pieces {
		slices = append(slices, r.parts[i])
		for gap := p.Len - len(r.parts[i]); gap > 0; {
			z := zeros[:min(gap, len(zeros))]
			slices = append(slices, z)
			gap -= len(z)
		}
	}
	r.parts, r.size = slices, len(dest)
	return r, nil
}

// zeros backs the holes of reads; never written.
var zeros = make([]byte, 1<<20)

// stripeRead is a read's data as slices of OST shared memory, caller
// buffers and zeros. It is a fuse.ReadResult that go-fuse writes to the
// kernel with one writev (Slices), then calls Done, which gives the shared
// memory back.
type stripeRead struct {
	parts [][]byte
	dones []func()
	size  int
}

func (r *stripeRead) Slices() ([][]byte, fuse.Status) { return r.parts, fuse.OK }

func (r *stripeRead) Size() int { return r.size }

// Bytes joins the parts, for a reader of the result that cannot take slices.
func (r *stripeRead) Bytes(buf []byte) ([]byte, fuse.Status) {
	if cap(buf) < r.size {
		buf = make([]byte, r.size)
	}
	buf = buf[:0]
	for _, p := range r.parts {
		buf = append(buf, p...)
	}
	return buf, fuse.OK
}

func (r *stripeRead) Done() {
	for i, done := range r.dones {
		if done != nil {
			done()
			r.dones[i] = nil
		}
	}
}

// truncateObjects cuts (or extends) every stripe object to what a file of
// size bytes holds on it. Done before meta records the size, so a later
// extension never exposes old bytes.
func (g *Gateway) truncateObjects(ctx context.Context, l *api.Layout, size int64) error {
	ctx = context.WithoutCancel(ctx)
	return forEach(len(l.Objects), func(i int) error {
		obj := l.Objects[i]
		addr, err := g.ostAddr(obj.OST)
		if err != nil {
			return err
		}
		return g.ost.Punch(ctx, addr, obj.ObjID, l.ObjectSize(i, size))
	})
}

// syncObjects makes the given stripes durable on their OSTs.
func (g *Gateway) syncObjects(ctx context.Context, l *api.Layout, stripes []int) error {
	ctx = context.WithoutCancel(ctx)
	return forEach(len(stripes), func(i int) error {
		obj := l.Objects[stripes[i]]
		addr, err := g.ostAddr(obj.OST)
		if err != nil {
			return err
		}
		return g.ost.Sync(ctx, addr, obj.ObjID)
	})
}

// allocateObjects reserves space on every stripe for its share of the file
// range [off, end), without changing object sizes.
func (g *Gateway) allocateObjects(ctx context.Context, l *api.Layout, off, end int64) error {
	ctx = context.WithoutCancel(ctx)
	return forEach(len(l.Objects), func(i int) error {
		from, to := l.ObjectSize(i, off), l.ObjectSize(i, end)
		if to <= from {
			return nil
		}
		obj := l.Objects[i]
		addr, err := g.ostAddr(obj.OST)
		if err != nil {
			return err
		}
		return g.ost.Allocate(ctx, addr, obj.ObjID, from, to-from, true)
	})
}
