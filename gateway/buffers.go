package gateway

import "github.com/stria/stria/api/iobuf"

// maxWrite is the largest FUSE WRITE the mount takes.
const maxWrite = 1 << 20

// joinable returns b's bytes in a buffer of capacity maxWrite, which writes
// continuing them can join (pendingWrite), giving b back if it was smaller.
// Only a write held pending takes one: those in flight keep buffers of
// their own size, so many small writes in flight do not hold 1 MiB each.
func joinable(b *[]byte) *[]byte {
	if cap(*b) >= maxWrite {
		return b
	}
	j := iobuf.Get(maxWrite)
	*j = append((*j)[:0], *b...)
	iobuf.Put(b)
	return j
}
