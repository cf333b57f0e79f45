package gateway

import "github.com/stria/stria/api/iobuf"

// maxWrite is the largest FUSE WRITE the mount takes.
const maxWrite = 1 << 20

// joinable returns b's bytes in a buffer of capacity maxWrite, giving b
// back if it was smaller (pendingWrite.join says when).
func joinable(b *[]byte) *[]byte {
	if cap(*b) >= maxWrite {
		return b
	}
	j := iobuf.Get(maxWrite)
	*j = append((*j)[:0], *b...)
	iobuf.Put(b)
	return j
}
