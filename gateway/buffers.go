package gateway

import "github.com/stria/stria/api/iobuf"

// maxWrite is the largest FUSE WRITE the mount takes.
const maxWrite = 1 << 20

// writeBuffer returns a buffer of length n for write-behind's copy of a
// FUSE write, from iobuf (huge pages, kept between uses: on a VM that
// reclaims guest memory, faulting fresh pages in cost more than the writes
// they held). Up to maxWrite its capacity is maxWrite, so that writes
// continuing it can join it (pendingWrite).
func writeBuffer(n int) *[]byte {
	if n > maxWrite {
		return iobuf.Get(n)
	}
	b := iobuf.Get(maxWrite)
	*b = (*b)[:n]
	return b
}
