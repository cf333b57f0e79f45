package ost

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/stria/stria/api"
	"golang.org/x/sys/unix"
)

// hasSidecar reports where an object's checksums live, failing the test
// if both or neither hold them.
func hasSidecar(t *testing.T, path string) bool {
	t.Helper()
	_, attrErr := unix.Getxattr(path, inlineAttr, nil)
	_, fileErr := os.Stat(path + ".crc")
	switch {
	case attrErr == nil && fileErr == nil:
		t.Fatalf("%s has both a checksum attribute and a sidecar", path)
	case attrErr != nil && fileErr != nil:
		t.Fatalf("%s has no checksums: %v, %v", path, attrErr, fileErr)
	}
	return fileErr == nil
}

// sidecarBlocks is the block size in the header of the sidecar of the
// object whose data file is path.
func sidecarBlocks(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path + ".crc")
	if err != nil || len(b) < crcHeaderSize {
		t.Fatalf("sidecar of %s: %d bytes, %v", path, len(b), err)
	}
	bs, ok := parseCRCHeader(b[:crcHeaderSize])
	if !ok {
		t.Fatalf("sidecar of %s: bad header % x", path, b[:crcHeaderSize])
	}
	return bs
}

func TestInlineChecksums(t *testing.T) {
	cli := startEtcd(t)
	cfg := testConfig(t, "inline")
	o := startOST(t, cli, cfg, nil)
	c := newClient(t)
	ctx := t.Context()
	top := t
	const B = inlineBlockSize

	t.Run("a write past the attribute moves the checksums to a sidecar", func(t *testing.T) {
		const obj = 0x501
		var m model
		d := pattern(1, 3*B+17)
		if err := c.Write(ctx, o.Addr(), obj, 100, d, true); err != nil {
			t.Fatal(err)
		}
		m.write(100, d)
		if hasSidecar(t, objectPath(cfg.DataDir, obj)) {
			t.Fatal("a 3-block object has a sidecar")
		}
		tail := pattern(2, B/2)
		if err := c.Write(ctx, o.Addr(), obj, (inlineBlocks+1)*B+5, tail, false); err != nil {
			t.Fatal(err)
		}
		m.write((inlineBlocks+1)*B+5, tail)
		if !hasSidecar(t, objectPath(cfg.DataDir, obj)) {
			t.Fatal("no sidecar after a write past the attribute")
		}
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, len(m.b)+10)
		if bs := sidecarBlocks(t, objectPath(cfg.DataDir, obj)); bs != sidecarBlockSize {
			t.Fatalf("the new sidecar has %d-byte blocks, want %d", bs, sidecarBlockSize)
		}
		// Blocks the attribute held are still checked.
		flipBit(t, objectPath(cfg.DataDir, obj), B+3)
		if _, err := c.Read(ctx, o.Addr(), obj, B, make([]byte, 10)); codeOf(err) != api.CodeCorrupt {
			t.Fatalf("read of a damaged block after the move: %v, want corrupt", err)
		}
	})

	t.Run("a block damaged before the move stays damaged, alone", func(t *testing.T) {
		const obj = 0x507
		var m model
		d := pattern(11, 3*B)
		if err := c.Write(ctx, o.Addr(), obj, 0, d, true); err != nil {
			t.Fatal(err)
		}
		m.write(0, d)
		flipBit(t, objectPath(cfg.DataDir, obj), B+B/2)
		// A write elsewhere, past the attribute, goes on.
		far := pattern(12, 100)
		if err := c.Write(ctx, o.Addr(), obj, inlineBlocks*B+7, far, false); err != nil {
			t.Fatalf("write past the attribute with a damaged block behind: %v", err)
		}
		m.write(inlineBlocks*B+7, far)
		// Every piece of the damaged block reads as corrupt, the others
		// as written.
		for off := int64(0); off < 3*B; off += sidecarBlockSize {
			_, err := c.Read(ctx, o.Addr(), obj, off, make([]byte, sidecarBlockSize))
			if damaged := off >= B && off < 2*B; damaged != (codeOf(err) == api.CodeCorrupt) {
				t.Fatalf("read at %d (damaged %v): %v", off, damaged, err)
			}
		}
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, B)
		checkRead(t, ctx, c, o.Addr(), obj, &m, 2*B, len(m.b))
		// A piece written whole is sound again.
		w := pattern(13, sidecarBlockSize)
		if err := c.Write(ctx, o.Addr(), obj, B, w, false); err != nil {
			t.Fatal(err)
		}
		m.write(B, w)
		checkRead(t, ctx, c, o.Addr(), obj, &m, B, sidecarBlockSize)
		if _, err := c.Read(ctx, o.Addr(), obj, B+sidecarBlockSize, make([]byte, 1)); codeOf(err) != api.CodeCorrupt {
			t.Fatalf("read of the next piece: %v, want corrupt", err)
		}
	})

	t.Run("a large first write starts with a sidecar", func(t *testing.T) {
		const obj = 0x502
		if err := c.Write(ctx, o.Addr(), obj, 0, pattern(3, (inlineBlocks+4)*B), false); err != nil {
			t.Fatal(err)
		}
		if !hasSidecar(t, objectPath(cfg.DataDir, obj)) {
			t.Fatal("a 12-block object keeps its checksums in an attribute")
		}
	})

	t.Run("the attribute wins over a stale sidecar", func(t *testing.T) {
		// What a crash in a promotion, or a destroy cut short before the
		// object was created again, leaves.
		const obj = 0x503
		var m model
		d := pattern(4, B+9)
		if err := c.Write(ctx, o.Addr(), obj, 0, d, true); err != nil {
			t.Fatal(err)
		}
		m.write(0, d)
		if err := os.WriteFile(objectPath(cfg.DataDir, obj)+".crc", []byte("stale, not even a header"), 0o644); err != nil {
			t.Fatal(err)
		}
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, len(m.b))
		far := pattern(5, 3*B)
		if err := c.Write(ctx, o.Addr(), obj, inlineBlocks*B, far, false); err != nil {
			t.Fatal(err)
		}
		m.write(inlineBlocks*B, far)
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, len(m.b)+1)
	})

	t.Run("holes past the attribute", func(t *testing.T) {
		const obj = 0x504
		var m model
		d := pattern(6, 2*B)
		if err := c.Write(ctx, o.Addr(), obj, 0, d, false); err != nil {
			t.Fatal(err)
		}
		m.write(0, d)
		for _, size := range []int64{20 * B, 12*B + 500} { // extend, then cut inside a hole
			if err := c.Punch(ctx, o.Addr(), obj, size); err != nil {
				t.Fatalf("punch to %d: %v", size, err)
			}
			m.punch(size)
			checkRead(t, ctx, c, o.Addr(), obj, &m, 0, len(m.b)+1)
		}
		if hasSidecar(t, objectPath(cfg.DataDir, obj)) {
			t.Fatal("holes alone moved the checksums to a sidecar")
		}
		w := pattern(7, 100)
		if err := c.Write(ctx, o.Addr(), obj, 11*B, w, false); err != nil {
			t.Fatal(err)
		}
		m.write(11*B, w)
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, len(m.b)+1)
	})

	t.Run("objects of format version 1 stay readable and writable", func(t *testing.T) {
		const obj = 0x505
		var m model
		d := pattern(8, B+1)
		if err := c.Write(ctx, o.Addr(), obj, 0, d, true); err != nil {
			t.Fatal(err)
		}
		m.write(0, d)
		if err := o.stop(); err != nil {
			t.Fatal(err)
		}
		// Rewrite it the way version 1 stored it: a sidecar, no attribute.
		path := objectPath(cfg.DataDir, obj)
		hdr := crcHeader(inlineBlockSize) // version 1 sidecars had 64 KiB blocks
		if err := os.WriteFile(path+".crc", append(hdr[:], inlineSlots(t, path)...), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Removexattr(path, inlineAttr); err != nil {
			t.Fatal(err)
		}
		o = startOST(top, cli, cfg, nil) // for the subtests after this one too
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, len(m.b))
		w := pattern(9, 10)
		if err := c.Write(ctx, o.Addr(), obj, 5, w, true); err != nil {
			t.Fatal(err)
		}
		m.write(5, w)
		// It grows past what an attribute holds with its 64 KiB blocks.
		w = pattern(14, B+3)
		if err := c.Write(ctx, o.Addr(), obj, inlineBlocks*B-5, w, true); err != nil {
			t.Fatal(err)
		}
		m.write(inlineBlocks*B-5, w)
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, len(m.b))
		if !hasSidecar(t, path) {
			t.Fatal("a version-1 object lost its sidecar")
		}
		if bs := sidecarBlocks(t, path); bs != inlineBlockSize {
			t.Fatalf("a version-1 sidecar now has %d-byte blocks, want %d", bs, inlineBlockSize)
		}
	})

	t.Run("a file system without user attributes gets sidecars", func(t *testing.T) {
		// What the store does once the file system said ENOTSUP.
		o.store.noXattr.Store(true)
		defer o.store.noXattr.Store(false)
		const obj = 0x506
		var m model
		d := pattern(10, 1000)
		if err := c.Write(ctx, o.Addr(), obj, 0, d, true); err != nil {
			t.Fatal(err)
		}
		m.write(0, d)
		if !hasSidecar(t, objectPath(cfg.DataDir, obj)) {
			t.Fatal("no sidecar")
		}
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, len(m.b))
	})

	t.Run("destroy removes every file", func(t *testing.T) {
		objs := []uint64{0x501, 0x502, 0x503, 0x504, 0x505, 0x506, 0x507}
		if n, err := c.Destroy(ctx, o.Addr(), objs); n != len(objs) || err != nil {
			t.Fatalf("destroy: %d, %v", n, err)
		}
		for _, obj := range objs {
			for _, p := range []string{objectPath(cfg.DataDir, obj), objectPath(cfg.DataDir, obj) + ".crc"} {
				if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s after destroy: %v", p, err)
				}
			}
		}
	})
}
