package gateway

import "sync"

// maxWrite is the largest FUSE WRITE the mount takes.
const maxWrite = 1 << 20

// bufferPool recycles buffers of one size: write-behind's copies of FUSE's
// write buffers (1 MiB, MaxWrite) and strided read-ahead's chunks. Reuse
// matters beyond the garbage collector's work: Go returns idle heap to the
// OS, and on a VM that reclaims guest memory, faulting fresh pages in made
// filling a new 256 KiB prefetch chunk cost more than the read behind it.
// Larger requests are allocated.
type bufferPool struct {
	size int
	pool sync.Pool
}

func newBufferPool(size int) *bufferPool { return &bufferPool{size: size} }

func (p *bufferPool) get(n int) *[]byte {
	if n > p.size {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.pool.Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, p.size)
	return &b
}

func (p *bufferPool) put(b *[]byte) {
	if cap(*b) == p.size {
		p.pool.Put(b)
	}
}
