package ost

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
	"golang.org/x/sys/unix"
)

// Where an object's checksum slots live (format version 2; see blockcrc.go
// for the slots themselves).
//
// A small object keeps them in an extended attribute of its data file,
// inlineAttr, whose value is the slots of blocks 0..inlineBlocks-1 (no
// header; all-zero slots are holes). It is written at its full size from
// the start, so updating it never needs more room: a write refused for lack
// of space is refused before its data is written, as with sidecars. An
// object is one file then, not two: half the inodes on the OST, one file to
// open and to read from disk after its pages were dropped, one fsync to make
// it durable. 64 bytes of value fit
// in the inode itself on ext4 (256-byte inodes), so reading them costs no
// extra disk read.
//
// An object with a slot beyond inlineBlocks to write moves them to the
// sidecar file of format version 1 (promote): the sidecar is written, and
// made durable when the object holds data, before the attribute goes. An
// object that has the attribute is inline, whatever sidecar lies beside
// it (one a crash left during a promotion, or a destroy before the object
// was created again); one without it uses its sidecar, as every object of
// version 1 does. A file system without user extended attributes gets
// sidecars only.
const (
	inlineAttr   = "user.stria.crc"
	inlineBlocks = 8
)

// checksums is an object's slot store.
type checksums interface {
	// blockSize is the bytes each slot covers.
	blockSize() int64
	// read fills b with the slots of blocks first.. ; slots never written
	// read as holes (zeros).
	read(first int64, b []byte) error
	// write stores slots for blocks first.. . An inline store refuses
	// slots past inlineBlocks with errInlineFull.
	write(first int64, b []byte) error
	// truncate drops the slots of blocks from blocks on.
	truncate(blocks int64) error
	// reserve allocates disk space for n slots from block first.
	reserve(s *store, first, n int64) error
	// sync makes data (the object's data file) and the slots durable.
	sync(data *os.File) error
	close()
}

var errInlineFull = errors.New("slots past what the attribute holds")

// sidecar keeps the slots in the object's .crc file.
type sidecar struct {
	obj uint64
	f   *os.File
	bs  int64 // from the header
}

func (c *sidecar) blockSize() int64 { return c.bs }

func (c *sidecar) read(first int64, b []byte) error {
	n, err := c.f.ReadAt(b, slotOffset(first))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read checksums of object %016x: %w", c.obj, err)
	}
	clear(b[n:])
	return nil
}

func (c *sidecar) write(first int64, b []byte) error {
	if _, err := c.f.WriteAt(b, slotOffset(first)); err != nil {
		return fmt.Errorf("write checksums of object %016x: %w", c.obj, err)
	}
	return nil
}

func (c *sidecar) truncate(blocks int64) error {
	if err := c.f.Truncate(slotOffset(blocks)); err != nil {
		return fmt.Errorf("truncate checksums of object %016x: %w", c.obj, err)
	}
	return nil
}

func (c *sidecar) reserve(s *store, first, n int64) error {
	return s.reserve(c.f, slotOffset(first), n*slotSize)
}

func (c *sidecar) sync(data *os.File) error {
	if err := fdatasync(data); err != nil {
		return fmt.Errorf("sync object %016x: %w", c.obj, err)
	}
	if err := fdatasync(c.f); err != nil {
		return fmt.Errorf("sync checksums of object %016x: %w", c.obj, err)
	}
	return nil
}

func (c *sidecar) close() { c.f.Close() }

// inline keeps the slots in the data file's inlineAttr. Every access reads
// the attribute again (from the inode, in memory): like the sidecar's, the
// slots are what is on disk, never a copy that could hide damage.
type inline struct {
	obj  uint64
	data *os.File
}

func (c *inline) blockSize() int64 { return inlineBlockSize }

// load returns the attribute's value, checked.
func (c *inline) load() ([]byte, error) {
	buf := make([]byte, inlineBlocks*slotSize)
	n, err := unix.Fgetxattr(int(c.data.Fd()), inlineAttr, buf)
	switch {
	case errors.Is(err, unix.ERANGE) || err == nil && n%slotSize != 0:
		return nil, api.Errorf(api.CodeCorrupt, "object %016x: checksum attribute damaged", c.obj)
	case errors.Is(err, unix.ENODATA):
		return nil, api.Errorf(api.CodeCorrupt, "object %016x: checksum attribute lost", c.obj)
	case err != nil:
		return nil, fmt.Errorf("read checksums of object %016x: %w", c.obj, err)
	}
	return buf[:n], nil
}

func (c *inline) store(v []byte) error {
	if err := unix.Fsetxattr(int(c.data.Fd()), inlineAttr, v, 0); err != nil {
		return fmt.Errorf("write checksums of object %016x: %w", c.obj, err)
	}
	return nil
}

func (c *inline) read(first int64, b []byte) error {
	v, err := c.load()
	if err != nil {
		return err
	}
	n := 0
	if off := first * slotSize; off < int64(len(v)) {
		n = copy(b, v[off:])
	}
	clear(b[n:])
	return nil
}

func (c *inline) write(first int64, b []byte) error {
	end := first*slotSize + int64(len(b))
	if end > inlineBlocks*slotSize {
		return errInlineFull
	}
	v, err := c.load()
	if err != nil {
		return err
	}
	v = fullSize(v)
	copy(v[first*slotSize:], b)
	return c.store(v)
}

func (c *inline) truncate(blocks int64) error {
	v, err := c.load()
	if err != nil || int64(len(v)) <= blocks*slotSize {
		return err
	}
	if !slices.ContainsFunc(v[blocks*slotSize:], func(b byte) bool { return b != 0 }) {
		return nil // holes there already
	}
	v = fullSize(v)
	clear(v[blocks*slotSize:])
	return c.store(v)
}

// fullSize pads an attribute value to inlineBlocks slots.
func fullSize(v []byte) []byte {
	if len(v) < inlineBlocks*slotSize {
		v = append(v, make([]byte, inlineBlocks*slotSize-len(v))...)
	}
	return v
}

func (c *inline) reserve(*store, int64, int64) error { return nil }

// sync: fdatasync need not write an attribute change (ext4 counts it as
// metadata not needed to read the data back), so a full fsync.
func (c *inline) sync(data *os.File) error {
	if err := retryEINTR(unix.Fsync, data); err != nil {
		return fmt.Errorf("sync object %016x: %w", c.obj, err)
	}
	return nil
}

func (c *inline) close() {}

// openSums finds where the slots of an object whose data file is open
// live; fresh says the object is new or empty, so a missing sidecar is
// expected.
func (s *store) openSums(obj uint64, data *os.File, fresh bool) (checksums, error) {
	if !s.noXattr.Load() {
		var probe [1]byte
		_, err := unix.Fgetxattr(int(data.Fd()), inlineAttr, probe[:0])
		switch {
		case err == nil:
			return &inline{obj: obj, data: data}, nil
		case errors.Is(err, unix.ENOTSUP):
			s.noXattr.Store(true)
		case !errors.Is(err, unix.ENODATA):
			return nil, fmt.Errorf("read checksums of object %016x: %w", obj, err)
		}
	}
	return s.openCRC(obj, data.Name()+".crc", fresh)
}

// newSums starts the slots of a new object whose data file was just
// created: inline where the file system allows.
func (s *store) newSums(obj uint64, data *os.File) (checksums, error) {
	if !s.noXattr.Load() {
		err := unix.Fsetxattr(int(data.Fd()), inlineAttr, make([]byte, inlineBlocks*slotSize), 0)
		if err == nil {
			return &inline{obj: obj, data: data}, nil
		}
		if !errors.Is(err, unix.ENOTSUP) {
			return nil, fmt.Errorf("start checksums of object %016x: %w", obj, err)
		}
		s.noXattr.Store(true)
	}
	return newSidecar(obj, data.Name()+".crc")
}

// newSidecar starts an empty sidecar at path, emptying whatever a crash
// left there.
func newSidecar(obj uint64, path string) (*sidecar, error) {
	f, err := openFile(path, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create checksums of object %016x: %w", obj, err)
	}
	return startSidecar(obj, f)
}

// startSidecar writes the header of a sidecar of this format's block size
// into the empty file f, which it closes on failure.
func startSidecar(obj uint64, f *os.File) (*sidecar, error) {
	h := crcHeader(sidecarBlockSize)
	if _, err := f.WriteAt(h[:], 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("write checksum header of object %016x: %w", obj, err)
	}
	return &sidecar{obj: obj, f: f, bs: sidecarBlockSize}, nil
}

// promote moves an inline object's slots to a sidecar, before a write of a
// slot the attribute cannot hold. The slots of data made durable must be
// durable in the sidecar before they leave the attribute. An object written
// since its creation but never synced has none: like any write not synced,
// a crash may leave its blocks reading as corrupt, never as wrong bytes.
// That spares a file written in pieces two fsyncs when it outgrows the
// attribute.
func (s *store) promote(h *handle, size int64) error {
	in := h.sums.(*inline)
	v, err := in.load()
	if err != nil {
		return err
	}
	slots, err := s.splitSlots(h, v, size)
	if err != nil {
		return err
	}
	side, err := newSidecar(h.obj, h.data.Name()+".crc")
	if err != nil {
		return err
	}
	s.markDirty(h.obj)
	err = side.write(0, slots)
	if err == nil && size > 0 && h.synced.Load() {
		if err = fdatasync(side.f); err == nil {
			err = s.syncDirOf(h)
		}
	}
	if err == nil {
		err = unix.Fremovexattr(int(h.data.Fd()), inlineAttr)
	}
	if err != nil {
		side.close()
		return fmt.Errorf("move checksums of object %016x to its sidecar: %w", h.obj, err)
	}
	h.sums = side
	h.edges.split(inlineBlockSize, sidecarBlockSize, slots)
	return nil
}

// splitSlots turns the attribute's slots v of an object of size bytes into
// the sidecar's, of smaller blocks: each block holding data is read back
// and verified, and the checksums of its pieces computed from it. A block
// that fails verification has each of its pieces marked damaged, so that
// reads still find it while the write that needs the room goes on; a hole
// stays holes.
func (s *store) splitSlots(h *handle, v []byte, size int64) ([]byte, error) {
	const pieces = inlineBlockSize / sidecarBlockSize
	held := min(size, int64(len(v)/slotSize)*inlineBlockSize)
	out := make([]byte, blocksFor(held, sidecarBlockSize)*slotSize)
	var bp *[]byte
	defer func() {
		if bp != nil {
			iobuf.Put(bp)
		}
	}()
	for b := range blocksFor(held, inlineBlockSize) {
		slot := v[b*slotSize : (b+1)*slotSize]
		if _, state := getSlot(slot); state == slotHole {
			continue
		}
		if bp == nil {
			bp = iobuf.Get(inlineBlockSize)
		}
		buf := *bp
		damaged := false
		if err := s.readBlock(h, b, size, buf, slot); err != nil {
			if api.CodeOf(err) != api.CodeCorrupt {
				return nil, err
			}
			damaged = true // logged by readBlock
		}
		n := min(inlineBlockSize, size-b*inlineBlockSize)
		for i := range blocksFor(n, sidecarBlockSize) {
			at := (b*pieces + i) * slotSize
			if damaged {
				putDamaged(out[at:])
				continue
			}
			lo := i * sidecarBlockSize
			putSlot(out[at:], blockCRC(buf[lo:min(lo+sidecarBlockSize, n)], sidecarBlockSize))
		}
	}
	return out, nil
}
