package ost

import (
	"errors"
	"hash/crc32"
	"os"

	"golang.org/x/sys/unix"
)

// Partly written blocks, remembered so that the next write into one needs
// no read-modify-write.
//
// A write that covers a checksum block only in part must know the block's
// other bytes to compute its new checksum: write reads the block back and
// verifies it first. In the IOR "hard" shape (writers of 47,008-byte
// records interleaved in one file) every record does that for one or two
// blocks, and the reads were 40 % of the OST's time in that shape.
//
// But the OST often knows the rest of the block already: it wrote it. When
// a write leaves part of a block holding zeros (bytes past the end of the
// object, or a gap between records that another writer fills later), the
// handle remembers the checksum it stored for the block and which of its
// ranges are zeros. A later write that lands wholly inside those ranges
// changes zeros into its bytes, and CRC32C is linear: the new checksum is
// the stored one patched by the checksum of the change (patchCRC). Nothing
// is read. Bytes outside the write were verified or written by this OST
// and are covered by the patched checksum as before, so damage to them is
// still found by the next read.
//
// A block the OST remembers nothing of, whose slot is a hole and where
// the file system holds no data (SEEK_DATA), is zeros: a write into it
// reads nothing back either. Records of two writers reach the OST out of
// order, tens of MiB behind the end (one mount's write-behind runs ahead
// of the other's), into blocks never remembered; a block read there also
// had ext4 read ahead (zeroing pages) through the holes beyond.
//
// What is remembered must still be true when it is used:
//   - The object's data file's ctime is recorded after each write: if
//     anything else changed the file since (a truncation, another process,
//     a test flipping a bit), every remembered block is forgotten and the
//     write reads and verifies as before.
//   - The slot on disk must hold exactly the checksum remembered, or the
//     block is read and verified (which finds a damaged slot).
//   - Truncation forgets the object's blocks; a write forgets every block
//     it touches before remembering its edges again, and a failed write
//     forgets them all. The knowledge lives in the cached handle, under
//     the object's lock, and goes with it.
const (
	maxZeroRuns   = 4    // zero ranges remembered per block
	maxEdgeBlocks = 4096 // blocks remembered per object
)

// edgeBlock is what the OST knows of a block it wrote part of.
type edgeBlock struct {
	crc   uint32                // the checksum stored in the block's slot
	zeros [maxZeroRuns][2]int32 // ranges [lo, hi) within the block known to hold zeros
	runs  int
}

// holeBlock is a block of bs bytes of zeros with a hole for a slot: one
// past the end, or one whose slot is a hole.
func holeBlock(bs int64) edgeBlock {
	return edgeBlock{crc: zeroBlockCRC(bs), zeros: [maxZeroRuns][2]int32{{0, int32(bs)}}, runs: 1}
}

// covers reports whether [lo, hi) lies inside one known zero range.
func (e *edgeBlock) covers(lo, hi int32) bool {
	for _, z := range e.zeros[:e.runs] {
		if z[0] <= lo && hi <= z[1] {
			return true
		}
	}
	return false
}

// written removes [lo, hi) from the known zero ranges.
func (e *edgeBlock) written(lo, hi int32) {
	var keep [2 * maxZeroRuns][2]int32
	n := 0
	for _, z := range e.zeros[:e.runs] {
		if hi <= z[0] || z[1] <= lo {
			keep[n] = z
			n++
			continue
		}
		if z[0] < lo {
			keep[n] = [2]int32{z[0], lo}
			n++
		}
		if hi < z[1] {
			keep[n] = [2]int32{hi, z[1]}
			n++
		}
	}
	// Forgetting a range is always safe: keep the largest.
	for n > maxZeroRuns {
		small := 0
		for i := 1; i < n; i++ {
			if keep[i][1]-keep[i][0] < keep[small][1]-keep[small][0] {
				small = i
			}
		}
		keep[small] = keep[n-1]
		n--
	}
	e.runs = copy(e.zeros[:], keep[:n])
}

// edgeMemory is an object's remembered blocks. Guarded by the object's
// stripe lock, held exclusively (every writer of the object holds it so).
type edgeMemory struct {
	blocks map[int64]edgeBlock
	ctime  unix.Timespec // of the data file after the last write remembered
}

// current forgets everything if the data file changed since the last
// write remembered (st is its state now).
func (m *edgeMemory) current(st *unix.Stat_t) {
	if len(m.blocks) > 0 && st.Ctim != m.ctime {
		m.forgetAll()
	}
}

// lookup returns what is known of block b (of bs bytes) of f when [lo, hi)
// of it is known to hold zeros: the block remembered, if its slot still
// holds the checksum remembered; else, if the slot is a hole and the file
// system holds no data there (never written since the object was created
// or the block punched), a block of zeros.
func (m *edgeMemory) lookup(b, bs int64, lo, hi int32, slot []byte, f *os.File) (edgeBlock, bool) {
	e, ok := m.blocks[b]
	if !ok {
		_, state := getSlot(slot)
		return holeBlock(bs), state == slotHole && holeOnDisk(f, b*bs, bs)
	}
	if !e.covers(lo, hi) {
		return e, false
	}
	if crc, state := getSlot(slot); state != slotValid || crc != e.crc {
		return e, false
	}
	return e, true
}

// holeOnDisk reports whether the file system holds no data in the block
// of bs bytes at off of f (SEEK_DATA finds none before its end): its bytes
// are zeros, by the file system's word, without reading them. A damaged
// hole (bytes written behind the OST's back) holds data and is read and
// verified. A file system without SEEK_DATA reports data everywhere.
func holeOnDisk(f *os.File, off, bs int64) bool {
	next, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if err != nil {
		return errors.Is(err, unix.ENXIO) // no data from off to the end
	}
	return next >= off+bs
}

// forgetAll drops every block.
func (m *edgeMemory) forgetAll() { clear(m.blocks) }

// forget drops blocks first..last.
func (m *edgeMemory) forget(first, last int64) {
	if len(m.blocks) == 0 {
		return
	}
	if last-first >= int64(len(m.blocks)) {
		for b := range m.blocks {
			if first <= b && b <= last {
				delete(m.blocks, b)
			}
		}
		return
	}
	for b := first; b <= last; b++ {
		delete(m.blocks, b)
	}
}

// remember records block b with checksum crc and known zeros, once the
// write that stored crc is done.
func (m *edgeMemory) remember(b int64, e edgeBlock) {
	if e.runs == 0 {
		delete(m.blocks, b)
		return
	}
	if m.blocks == nil {
		m.blocks = make(map[int64]edgeBlock)
	}
	if _, had := m.blocks[b]; !had && len(m.blocks) >= maxEdgeBlocks {
		for old := range m.blocks { // any one: forgetting is safe
			delete(m.blocks, old)
			break
		}
	}
	m.blocks[b] = e
}

// split renumbers what is remembered of blocks of from bytes as blocks of
// to bytes (from a multiple of to), whose slots are now slots (from block
// 0; see splitSlots): each piece holding part of a block's known zeros is
// remembered with those zeros and its own checksum. The bytes did not
// change, so what was known of them still holds.
func (m *edgeMemory) split(from, to int64, slots []byte) {
	old := m.blocks
	m.blocks = nil
	pieces := from / to
	for b, e := range old {
		for i := range pieces {
			piece := b*pieces + i
			if (piece+1)*slotSize > int64(len(slots)) {
				break // past the end: a write there knows it holds zeros
			}
			crc, state := getSlot(slots[piece*slotSize:])
			if state != slotValid {
				continue
			}
			p := edgeBlock{crc: crc}
			lo, hi := int32(i*to), int32((i+1)*to)
			for _, z := range e.zeros[:e.runs] {
				if zlo, zhi := max(z[0], lo), min(z[1], hi); zlo < zhi {
					p.zeros[p.runs] = [2]int32{zlo - lo, zhi - lo}
					p.runs++
				}
			}
			m.remember(piece, p)
		}
	}
}

// remembered records the data file's ctime after a write.
func (m *edgeMemory) remembered(f *os.File) {
	if len(m.blocks) == 0 {
		return
	}
	st, err := fileStat(f)
	if err != nil {
		m.forgetAll()
		return
	}
	m.ctime = st.Ctim
}

// zeroCRCs are the checksums of blocks of zeros of either size.
var zeroCRCs = [2]uint32{blockCRC(nil, sidecarBlockSize), blockCRC(nil, inlineBlockSize)}

// zeroBlockCRC is the checksum of a block of bs bytes of zeros.
func zeroBlockCRC(bs int64) uint32 {
	if bs == sidecarBlockSize {
		return zeroCRCs[0]
	}
	return zeroCRCs[1]
}

// patchCRC returns the checksum of a block of bs bytes whose checksum was
// crc after the zeros at [lo, lo+len(p)) became p. CRC32C is linear over XOR:
// crc(a ^ b) = crc(a) ^ crc(b) ^ crc(zeros) for messages of one length,
// so the change is the register-only CRC (no pre- or post-inversion) of
// p followed by the zeros up to the end of the block; zeros before p leave
// that register at zero.
func patchCRC(crc uint32, bs int64, lo int, p []byte) uint32 {
	c := crc32.Update(0xFFFFFFFF, castagnoli, p) // register 0, then p
	c = crc32.Update(c, castagnoli, zeroBlock[:int(bs)-lo-len(p)])
	return crc ^ ^c
}
