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

// writeExtent writes data at file offset off of file ino: what falls in
// the layout's Data-on-MDT region to meta, the rest to the OSTs, each stripe
// piece in parallel. It marks the stripes it touched in touched (what fsync
// must sync on the OSTs; meta's part is its OpSync's).
func (g *Gateway) writeExtent(ctx context.Context, ino uint64, l *api.Layout, off int64, data []byte, touched map[int]bool) error {
	if dom := int64(l.DoMSize); off < dom {
		n := int(min(dom-off, int64(len(data))))
		if err := g.writeDoM(ctx, ino, off, data[:n]); err != nil {
			return err
		}
		off, data = off+int64(n), data[n:]
		if len(data) == 0 {
			return nil
		}
	}
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

// useObjects tells meta, before this mount first writes to the stripe
// objects of l (a write, fallocate or truncate reaching end), that they are
// in use (api.LayoutIntentReq). Meta defers the objects of a file with a
// Data-on-MDT region until then, and destroys them with the file only once
// told. Once per layout and mount; nothing to tell while end stays inside
// the region, nor for a layout without one.
func (n *node) useObjects(ctx context.Context, l *api.Layout, end int64) error {
	if l.DoMSize == 0 || end <= int64(l.DoMSize) || len(l.Objects) == 0 {
		return nil
	}
	id := l.Objects[0].ObjID
	n.mu.Lock()
	done := n.objectsUsed == id
	n.mu.Unlock()
	if done {
		return nil
	}
	if err := n.gw.metaCall(ctx, api.OpLayoutIntent, api.LayoutIntentReq{Ino: n.ino(), ObjID: id}, nil); err != nil {
		return fmt.Errorf("layout intent: %w", err)
	}
	n.mu.Lock()
	n.objectsUsed = id
	n.mu.Unlock()
	return nil
}

// writeDoM writes data at off of ino's Data-on-MDT region.
func (g *Gateway) writeDoM(ctx context.Context, ino uint64, off int64, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), api.MaxDoMRequest)
		if err := g.metaCall(ctx, api.OpDoMWrite, api.DoMWriteReq{Ino: ino, Off: off, Data: data[:n]}, nil); err != nil {
			return fmt.Errorf("write data kept on meta: %w", err)
		}
		off, data = off+int64(n), data[n:]
	}
	return nil
}

// readDoM reads up to n bytes at off of ino's Data-on-MDT region: fewer
// where what was written of it ends.
func (g *Gateway) readDoM(ctx context.Context, ino uint64, off int64, n int) ([]byte, error) {
	var out []byte
	for n > 0 {
		want := min(n, api.MaxDoMRequest)
		var r api.DoMReadResp
		if err := g.metaCall(ctx, api.OpDoMRead, api.DoMReadReq{Ino: ino, Off: off, Len: want}, &r); err != nil {
			g.log.Warn("read failed", "ino", ino, "offset", off, "where", "meta (data-on-MDT)", "err", err)
			return nil, fmt.Errorf("read data kept on meta: %w", err)
		}
		if out == nil {
			out = r.Data
		} else {
			out = append(out, r.Data...)
		}
		if len(r.Data) < want {
			break
		}
		off, n = off+int64(want), n-want
	}
	return out, nil
}

// readExtent reads len(dest) bytes at file offset off of file ino. Bytes
// neither meta nor an object holds (holes, or past what was written inside
// the file size) read as zeros. Whole blocks on OSTs in this process are
// read into dest (api.OSTHandler.ReadOST); when every byte is there, the
// result is dest itself. Otherwise it is the pieces where they came from —
// memory shared with an OST of this machine (api.OSTClient.ReadShared),
// lent until the result is Done, dest, and zeros.
func (g *Gateway) readExtent(ctx context.Context, ino uint64, l *api.Layout, off int64, dest []byte) (fuse.ReadResult, error) {
	ctx = context.WithoutCancel(ctx) // see metaCall; OSTTimeout bounds it
	whole, domLen := dest, 0
	if dom := int64(l.DoMSize); off < dom {
		domLen = int(min(dom-off, int64(len(dest))))
		head, err := g.readDoM(ctx, ino, off, domLen)
		if err != nil {
			return nil, err
		}
		clear(dest[copy(dest[:domLen], head):domLen])
		off, dest = off+int64(domLen), dest[domLen:]
		if len(dest) == 0 {
			return destRead(whole), nil
		}
	}
	pieces := l.MapExtent(off, len(dest), nil)
	parts := make([][]byte, len(pieces))
	r := &stripeRead{size: len(whole), dones: make([]func(), len(pieces))}
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
		parts[i], r.dones[i] = data, done
		return nil
	})
	if err != nil {
		r.Done()
		return nil, err
	}
	inPlace := true
	for i, p := range pieces {
		if d := parts[i]; len(d) > 0 && &d[0] != &dest[p.BufOff] {
			inPlace = false
		}
	}
	// Pieces come in file order; a short one ends in a hole or before the
	// object's end: zeros.
	if inPlace {
		for i, p := range pieces {
			clear(dest[p.BufOff+len(parts[i]) : p.BufOff+p.Len])
		}
		r.Done()
		return destRead(whole), nil
	}
	if domLen > 0 {
		r.parts = append(r.parts, whole[:domLen])
	}
	for i, p := range pieces {
		r.parts = appendZeros(append(r.parts, parts[i]), p.Len-len(parts[i]))
	}
	return r, nil
}

// destRead is a read whose bytes are all in the buffer go-fuse handed the
// handler. Unlike fuse.ReadResultData it offers only Bytes, which makes
// go-fuse reply from that buffer as it is; given a way to copy (Readv or
// Slices), its io_uring path copies the bytes onto themselves.
type destRead []byte

func (d destRead) Bytes([]byte) ([]byte, fuse.Status) { return d, fuse.OK }
func (d destRead) Size() int                          { return len(d) }
func (d destRead) Done()                              {}

// appendZeros appends n zero bytes to parts, as slices of zeros.
func appendZeros(parts [][]byte, n int) [][]byte {
	for n > 0 {
		z := zeros[:min(n, len(zeros))]
		parts = append(parts, z)
		n -= len(z)
	}
	return parts
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
		return g.ost.Punch(ctx, addr, obj.ObjID, objectSize(l, i, size))
	})
}

// objectSize is what truncate cuts stripe i's object to for a file of
// size bytes: nothing when the file ends inside its Data-on-MDT region (so
// no object is created for it), else as striping puts it, the region a
// hole.
func objectSize(l *api.Layout, i int, size int64) int64 {
	if size <= int64(l.DoMSize) {
		return 0
	}
	return l.ObjectSize(i, size)
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
	// Meta keeps the Data-on-MDT region and reserves nothing for it.
	off = max(off, int64(l.DoMSize))
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
