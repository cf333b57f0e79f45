package gateway

import "github.com/stria/stria/api/iobuf"

// maxWrite is the largest FUSE WRITE the mount takes.
const maxWrite = 1 << 20

// joinable returns b's bytes in a buffer of capacity maxWrite, giving b
// back if it was smaller: a pending write moves into one when the first
// write that continues it does not fit its own buffer. Only then: a pending
// write that nothing joins (every other record of a strided writer) goes
// out in its own buffer, with one copy of its bytes and no 1 MiB held while
// in flight, so many small writes in flight do not hold 1 MiB each.
func joinable(b *[]byte) *[]byte {
	if cap(*b) >= maxWrite {
		return b
	}
	j := iobuf.Get(maxWrite)
	*j = append((*j)[:0], *b...)
	iobuf.Put(b)
	return j
}
