package gateway

import "sync"

// bufferPool recycles the 1 MiB copies write-behind keeps of FUSE's write
// buffers; larger requests (none, with MaxWrite 1 MiB) are allocated.
type bufferPool struct{ pool sync.Pool }

const pooledBufferSize = 1 << 20

func (p *bufferPool) get(n int) *[]byte {
	if n > pooledBufferSize {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.pool.Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, pooledBufferSize)
	return &b
}

func (p *bufferPool) put(b *[]byte) {
	if cap(*b) == pooledBufferSize {
		p.pool.Put(b)
	}
}
