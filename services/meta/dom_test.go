package meta

import (
	"bytes"
	"testing"
	"time"

	"github.com/stria/stria/api"
)

func (h *harness) domRead(ino uint64, off int64, n int) []byte {
	h.tb.Helper()
	var r api.DoMReadResp
	h.must(api.OpDoMRead, api.DoMReadReq{Ino: ino, Off: off, Len: n}, &r)
	return r.Data
}

// domRecord is what the store holds for ino's region (nil: no record).
func (h *harness) domRecord(ino uint64) []byte {
	h.tb.Helper()
	v, err := get(h.srv.st.db, domKey(ino))
	if err != nil {
		h.tb.Fatal(err)
	}
	return v
}

// domRegionSize is the region size the tests' directories ask for.
const domRegionSize = 64 << 10

// mkdomdir makes a directory whose new files keep their first 64 KiB here.
func (h *harness) mkdomdir(parent uint64, name string) uint64 {
	h.tb.Helper()
	d := h.mkdir(parent, name)
	h.must(api.OpSetLayout, api.LayoutReq{Ino: d, Layout: api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: -1, DoMSize: domRegionSize}}, nil)
	return d
}

func TestDataOnMDT(t *testing.T) {
	h := newHarness(t, 2)
	dd := h.mkdomdir(api.RootIno, "dom")
	f := h.mkfile(dd, "f")
	var lr api.LayoutResp
	h.must(api.OpGetLayout, api.LayoutReq{Ino: f}, &lr)
	if lr.Layout.DoMSize != domRegionSize || len(lr.Layout.Objects) != 1 {
		t.Fatalf("new file's layout %v: want its directory's %d bytes on meta and 1 object", lr.Layout, domRegionSize)
	}

	// Writes land where they say, gaps read as nothing stored (zeros to
	// the client), and neither size nor mtime moves.
	before := h.attr(f)
	h.must(api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: 100, Data: []byte("world")}, nil)
	h.must(api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: 94, Data: []byte("hello ")}, nil)
	if got := h.domRead(f, 94, 100); string(got) != "hello world" {
		t.Fatalf("read at 94: %q", got)
	}
	if got := h.domRead(f, 0, 4); !bytes.Equal(got, make([]byte, 4)) {
		t.Fatalf("read of the gap before the first write: %q, want 4 zeros", got)
	}
	if got := h.domRead(f, 105, 10); len(got) != 0 {
		t.Fatalf("read past what was written: %q, want nothing", got)
	}
	if a := h.attr(f); a.Size != before.Size || a.Mtime != before.Mtime {
		t.Fatalf("domwrite changed size or mtime: %+v -> %+v", before, a)
	}

	// The last byte of the region can be written; one past it cannot.
	last := int64(domRegionSize - 1)
	h.must(api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: last, Data: []byte{7}}, nil)
	d := h.mkdir(api.RootIno, "d")
	big := make([]byte, api.MaxDoMRequest+1)
	runCases(t, h, []opCase{
		{"write crossing the region's end", api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: last, Data: []byte{1, 2}}, nil, api.CodeInvalid, nil},
		{"write at a negative offset", api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: -1, Data: []byte{1}}, nil, api.CodeInvalid, nil},
		{"empty write", api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: 0}, nil, api.CodeInvalid, nil},
		{"oversized write", api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: 0, Data: big}, nil, api.CodeInvalid, nil},
		{"write to a directory", api.OpDoMWrite, api.DoMWriteReq{Ino: d, Off: 0, Data: []byte{1}}, nil, api.CodeIsDir, nil},
		{"write to no inode", api.OpDoMWrite, api.DoMWriteReq{Ino: 999999, Off: 0, Data: []byte{1}}, nil, api.CodeNotFound, nil},
		{"write to inode 0", api.OpDoMWrite, api.DoMWriteReq{Off: 0, Data: []byte{1}}, nil, api.CodeInvalid, nil},
		{"read past the region", api.OpDoMRead, api.DoMReadReq{Ino: f, Off: last, Len: 2}, &api.DoMReadResp{}, api.CodeInvalid, nil},
		{"oversized read", api.OpDoMRead, api.DoMReadReq{Ino: f, Off: 0, Len: api.MaxDoMRequest + 1}, &api.DoMReadResp{}, api.CodeInvalid, nil},
		{"read of a directory", api.OpDoMRead, api.DoMReadReq{Ino: d, Off: 0, Len: 1}, &api.DoMReadResp{}, api.CodeIsDir, nil},
	})
	if got := h.domRead(f, last, 1); !bytes.Equal(got, []byte{7}) {
		t.Fatalf("refused requests changed the region: last byte %v", got)
	}

	// A file laid out without a region (the filesystem default) refuses
	// region I/O.
	plain := h.mkfile(api.RootIno, "plain")
	if err := h.call(api.OpDoMWrite, api.DoMWriteReq{Ino: plain, Off: 0, Data: []byte{1}}, nil); codeOf(err) != api.CodeInvalid {
		t.Fatalf("domwrite to a file without a region: %v, want invalid", err)
	}

	// Truncation cuts the region in the same change as the size; growing
	// again shows zeros, not the old bytes.
	h.must(api.OpUpdateSize, api.UpdateSizeReq{Ino: f, Size: uint64(last + 1)}, nil)
	h.must(api.OpSetAttr, api.SetAttrReq{Ino: f, Valid: api.SetSize, Size: 97}, nil)
	if got := h.domRecord(f); string(got[94:]) != "hel" || len(got) != 97 {
		t.Fatalf("region after truncating to 97: %d bytes ending %q", len(got), got[min(94, len(got)):])
	}
	h.must(api.OpSetAttr, api.SetAttrReq{Ino: f, Valid: api.SetSize, Size: 200}, nil)
	if got := h.domRead(f, 94, 106); string(got) != "hel" {
		t.Fatalf("read after growing again: %q, want only the kept bytes", got)
	}
	h.must(api.OpSetAttr, api.SetAttrReq{Ino: f, Valid: api.SetSize, Size: 0}, nil)
	if got := h.domRecord(f); got != nil {
		t.Fatalf("region after truncating to 0: %q, want no record", got)
	}

	// What OpSync covered survives a restart.
	h.must(api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: 0, Data: []byte("durable")}, nil)
	h.must(api.OpSync, api.Empty{}, nil)
	h.restart(nil)
	if got := h.domRead(f, 0, 7); string(got) != "durable" {
		t.Fatalf("after a restart: %q", got)
	}

	// The record goes with the inode: at the last unlink, or when an
	// orphan kept open is released.
	h.must(api.OpUnlink, api.UnlinkReq{Parent: dd, Name: "f"}, nil)
	if got := h.domRecord(f); got != nil {
		t.Fatalf("region of an unlinked file: %q", got)
	}
	g := h.mkfile(dd, "g")
	h.must(api.OpDoMWrite, api.DoMWriteReq{Ino: g, Off: 0, Data: []byte("open")}, nil)
	h.must(api.OpUnlink, api.UnlinkReq{Parent: dd, Name: "g", KeepOpen: true}, nil)
	if got := h.domRead(g, 0, 4); string(got) != "open" {
		t.Fatalf("an open orphan's region: %q", got)
	}
	h.must(api.OpReleaseOrphan, api.InoReq{Ino: g}, nil)
	if got := h.domRecord(g); got != nil {
		t.Fatalf("region of a released orphan: %q", got)
	}
}

func TestInodeCodecDoM(t *testing.T) {
	in := &inode{
		Attr:      api.Attr{Ino: 5, Mode: regMode, Nlink: 1},
		Layout:    &api.Layout{StripeCount: 1, StripeSize: 1 << 20, DoMSize: 64 << 10, Objects: []api.StripeObject{{OST: 1, ObjID: 5}}},
		DefLayout: &api.Layout{StripeCount: 2, StripeSize: 1 << 20, StripeOffset: -1, DoMSize: 128 << 10},
	}
	out, err := decodeInode(encodeInode(in))
	if err != nil {
		t.Fatal(err)
	}
	if out.Layout.DoMSize != 64<<10 || out.DefLayout.DoMSize != 128<<10 {
		t.Fatalf("decoded DoM sizes %d, %d", out.Layout.DoMSize, out.DefLayout.DoMSize)
	}
	// A record from before DoM (no flag) decodes with none.
	in.Layout.DoMSize, in.DefLayout.DoMSize = 0, 0
	b := encodeInode(in)
	if out, err := decodeInode(b); err != nil || out.Layout.DoMSize != 0 {
		t.Fatalf("record without DoM: %v, %v", out, err)
	}
	// A DoM flag without the layout it belongs to is damage.
	b[inodeFixedLen-1] = flagDoM
	if _, err := decodeInode(b[:inodeFixedLen]); api.CodeOf(err) != api.CodeCorrupt {
		t.Fatalf("DoM flag without a layout: %v, want corrupt", err)
	}
}

// TestDataOnMDTNearlyFull: with the store's disk nearly full, new files get
// no region and writes to existing regions fail with ENOSPC, changing
// nothing; metadata itself still works.
func TestDataOnMDTNearlyFull(t *testing.T) {
	h := newHarness(t, 1)
	dd := h.mkdomdir(api.RootIno, "dom")
	f := h.mkfile(dd, "f")
	h.must(api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: 0, Data: []byte("kept")}, nil)
	h.restart(func(s *Server) {
		// A reading that stays fresh for the whole test.
		s.space.avail, s.space.at = domWriteReserve, time.Now().Add(time.Hour)
	})
	err := h.call(api.OpDoMWrite, api.DoMWriteReq{Ino: f, Off: 0, Data: []byte("lost")}, nil)
	if codeOf(err) != api.CodeNoSpace {
		t.Fatalf("domwrite on a nearly full disk: %v, want no space", err)
	}
	if got := h.domRead(f, 0, 4); string(got) != "kept" {
		t.Fatalf("refused write changed the region: %q", got)
	}
	g := h.mkfile(dd, "g")
	var lr api.LayoutResp
	h.must(api.OpGetLayout, api.LayoutReq{Ino: g}, &lr)
	if lr.Layout.DoMSize != 0 || len(lr.Layout.Objects) != 1 {
		t.Fatalf("new file on a nearly full store: layout %v, want all on the OSTs", lr.Layout)
	}
}
