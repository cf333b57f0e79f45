package ost

import (
	"bytes"
	"testing"

	"github.com/stria/stria/api"
)

// TestServeOSTInProcess checks that a client in the OST's process (stria
// up's mount) gets from ServeOST and ReadOST what it gets through a
// socket: the same bytes, sizes, counts and errors, and nothing once the
// OST stops.
func TestServeOSTInProcess(t *testing.T) {
	cli := startEtcd(t)
	cfg := testConfig(t, "local")
	o := startOST(t, cli, cfg, nil)
	remote := newClient(t)
	local := newClient(t)
	osts := &api.LocalOSTs{}
	osts.Add(o.Addr(), o.Server)
	local.Local = osts
	ctx := t.Context()
	addr := o.Addr()
	const B = inlineBlockSize

	// Writes through one are read through the other.
	const obj = 0x701
	var m model
	d := pattern(1, 2*B+300)
	if err := local.Write(ctx, addr, obj, 100, d, true); err != nil {
		t.Fatal(err)
	}
	m.write(100, d)
	o.connMu.Lock()
	conns := len(o.conns)
	o.connMu.Unlock()
	if conns != 0 {
		t.Fatalf("the local client opened %d connections", conns)
	}
	checkRead(t, ctx, remote, addr, obj, &m, 0, 3*B)
	d2 := pattern(2, 5000)
	if err := remote.Write(ctx, addr, obj, B-7, d2, false); err != nil {
		t.Fatal(err)
	}
	m.write(B-7, d2)
	checkRead(t, ctx, local, addr, obj, &m, 0, 3*B)
	data, done, err := local.ReadShared(ctx, addr, obj, 50, make([]byte, B))
	if err != nil || !bytes.Equal(data, m.read(50, B)) {
		t.Fatalf("lent read: %d bytes, %v; want the model's %d", len(data), err, B)
	}
	done()
	// Whole blocks land in the caller's buffer, not a lent one.
	dest := make([]byte, 2*B)
	data, done, err = local.ReadShared(ctx, addr, obj, B, dest)
	if err != nil || !bytes.Equal(data, m.read(B, 2*B)) {
		t.Fatalf("read of whole blocks: %d bytes, %v; want the model's %d", len(data), err, 2*B)
	}
	if &data[0] != &dest[0] {
		t.Fatal("a read of whole blocks was not read into the caller's buffer")
	}
	done()
	// In a large object (a sidecar's 4 KiB blocks) a 4 KiB read is one
	// block: it lands in the caller's buffer too; in a small one (the
	// attribute's 64 KiB blocks) it is lent.
	const big = 0x703
	var mb model
	db := pattern(3, (inlineBlocks+1)*B)
	if err := local.Write(ctx, addr, big, 0, db, false); err != nil {
		t.Fatal(err)
	}
	mb.write(0, db)
	for _, c := range []struct {
		obj     uint64
		m       *model
		inPlace bool
	}{{big, &mb, true}, {obj, &m, false}} {
		dest := make([]byte, sidecarBlockSize)
		data, done, err := local.ReadShared(ctx, addr, c.obj, 3*sidecarBlockSize, dest)
		if err != nil || !bytes.Equal(data, c.m.read(3*sidecarBlockSize, sidecarBlockSize)) {
			t.Fatalf("4 KiB read of object %x: %d bytes, %v", c.obj, len(data), err)
		}
		if got := &data[0] == &dest[0]; got != c.inPlace {
			t.Errorf("4 KiB read of object %x in the caller's buffer: %v, want %v", c.obj, got, c.inPlace)
		}
		done()
	}

	// Sizes, punches, allocations, syncs and statfs agree.
	if err := local.Punch(ctx, addr, obj, B+10); err != nil {
		t.Fatal(err)
	}
	m.punch(B + 10)
	if err := local.Allocate(ctx, addr, obj, 0, 4*B, true); err != nil {
		t.Fatal(err)
	}
	if err := local.Sync(ctx, addr, obj); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*api.OSTClient{local, remote} {
		if size, err := c.Stat(ctx, addr, obj); size != B+10 || err != nil {
			t.Errorf("size %d, %v; want %d", size, err, B+10)
		}
	}
	checkRead(t, ctx, remote, addr, obj, &m, 0, 3*B)
	lst, err := local.Statfs(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	rst, _ := remote.Statfs(ctx, addr)
	if lst.Index != rst.Index || lst.Objects != rst.Objects || lst.Total != rst.Total {
		t.Errorf("statfs locally %+v, through the socket %+v", lst, rst)
	}

	// Errors are the same, with the same words.
	flipBit(t, objectPath(cfg.DataDir, obj), 3)
	_, lerr := local.Read(ctx, addr, obj, 0, make([]byte, 10))
	_, rerr := remote.Read(ctx, addr, obj, 0, make([]byte, 10))
	if codeOf(lerr) != api.CodeCorrupt || lerr.Error() != rerr.Error() {
		t.Errorf("read of a damaged block: locally %v, through the socket %v", lerr, rerr)
	}
	if _, _, err := local.ReadShared(ctx, addr, obj, 0, make([]byte, 10)); codeOf(err) != api.CodeCorrupt {
		t.Errorf("lent read of a damaged block: %v, want corrupt", err)
	}
	lerr = local.Write(ctx, addr, obj, 1<<62, []byte("x"), false)
	rerr = remote.Write(ctx, addr, obj, 1<<62, []byte("x"), false)
	if codeOf(lerr) != api.CodeTooBig || lerr.Error() != rerr.Error() {
		t.Errorf("write out of range: locally %v, through the socket %v", lerr, rerr)
	}
	for _, bad := range []struct {
		name    string
		h       api.ReqHeader
		payload []byte
	}{
		{"unknown operation", api.ReqHeader{Op: 200}, nil},
		{"payload the header does not announce", api.ReqHeader{Op: api.OSTWrite, Object: obj}, []byte("x")},
		{"allocate without its length", api.ReqHeader{Op: api.OSTAllocate, Object: obj}, nil},
		{"shared region", api.ReqHeader{Op: api.OSTShare, Length: 4096}, nil},
	} {
		if _, _, err := o.ServeOST(ctx, bad.h, bad.payload, nil); codeOf(err) != api.CodeInvalid {
			t.Errorf("%s: %v, want invalid", bad.name, err)
		}
	}

	// Destroys count what they removed.
	if n, err := local.Destroy(ctx, addr, []uint64{obj, 0x702, big}); n != 3 || err != nil {
		t.Fatalf("destroy: %d, %v", n, err)
	}
	if size, err := remote.Stat(ctx, addr, obj); size != 0 || err != nil {
		t.Errorf("after destroy: size %d, %v", size, err)
	}

	// Nothing once the OST has stopped.
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}
	if err := local.Write(ctx, addr, obj, 0, []byte("late"), false); codeOf(err) != api.CodeUnavailable {
		t.Errorf("write after stop: %v, want unavailable", err)
	}
	if _, _, err := local.ReadShared(ctx, addr, obj, 0, make([]byte, 10)); codeOf(err) != api.CodeUnavailable {
		t.Errorf("read after stop: %v, want unavailable", err)
	}
}
