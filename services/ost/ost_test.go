package ost

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

const kib = 1 << 10

// op is one step applied to both the OST and an in-memory model object.
type op struct {
	kind string // "write", "punch", "read"
	off  int64
	n    int // bytes to write or read; the punch size is off
	sync bool
}

func w(off, n int64) op  { return op{kind: "write", off: off, n: int(n)} }
func ws(off, n int64) op { return op{kind: "write", off: off, n: int(n), sync: true} }
func p(size int64) op    { return op{kind: "punch", off: size} }
func r(off, n int64) op  { return op{kind: "read", off: off, n: int(n)} }

// model is what an object should contain.
type model struct{ b []byte }

func (m *model) write(off int64, d []byte) {
	if len(d) == 0 {
		return // an empty write does not extend
	}
	if end := int(off) + len(d); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	copy(m.b[off:], d)
}

func (m *model) punch(size int64) {
	if int(size) <= len(m.b) {
		m.b = m.b[:size]
		return
	}
	m.b = append(m.b, make([]byte, int(size)-len(m.b))...)
}

func (m *model) read(off int64, n int) []byte {
	if off >= int64(len(m.b)) {
		return nil
	}
	return m.b[off:min(int(off)+n, len(m.b))]
}

// checkRead reads [off, off+n) from the OST and compares it with the model.
func checkRead(t *testing.T, ctx context.Context, c *api.OSTClient, addr string, obj uint64, m *model, off int64, n int) {
	t.Helper()
	got := make([]byte, n)
	k, err := c.Read(ctx, addr, obj, off, got)
	if err != nil {
		t.Fatalf("read %d@%d: %v", n, off, err)
	}
	want := m.read(off, n)
	if k != len(want) {
		t.Fatalf("read %d@%d: got %d bytes, want %d", n, off, k, len(want))
	}
	if i := firstDiff(got[:k], want); i >= 0 {
		t.Fatalf("read %d@%d: byte %d (object offset %d) is %#x, want %#x", n, off, i, off+int64(i), got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// readWriteCases are TestReadWrite's shapes for blocks of B bytes.
func readWriteCases(B int64) []struct {
	name string
	ops  []op
} {
	return []struct {
		name string
		ops  []op
	}{
		{"aligned one block", []op{w(0, B), r(0, B)}},
		{"unaligned spanning blocks", []op{w(1000, 3*B+17), r(0, 4*B), r(B-1, 2), r(1000, 3*B+17)}},
		{"small writes inside one block", []op{w(10, 5), w(100, 7), w(12, 100), r(0, 200)}},
		{"sparse writes leave holes", []op{w(5*B+3, 100), w(20*B, B), r(0, 22*B), r(2*B, B), r(5*B, B)}},
		{"write far beyond end", []op{w(100, 10), w(40<<20+5, 10), r(0, 64), r(40<<20, 64), r(20<<20, 1<<20)}},
		{"overwrite in the middle", []op{w(0, 4*B), w(B+B/2, B), r(0, 4*B)}},
		{"overwrite edges of blocks", []op{w(0, 3*B), w(B-3, 6), w(2*B-1, 1), r(0, 3*B)}},
		{"read past end", []op{w(0, 1000), r(999, 10), r(1000, 10), r(5000, 10), r(B, B)}},
		{"short read at end", []op{w(0, B+10), r(B, B), r(5, 2*B)}},
		{"punch down into a block then extend", []op{w(0, 3*B), p(B + 100), r(0, 3*B), p(3 * B), r(0, 3*B), w(3*B, 5), r(0, 4*B)}},
		{"punch down then write past old bytes", []op{w(0, 2*B), p(10), w(B+5, 5), r(0, 2*B)}},
		{"punch to a block boundary", []op{w(0, 3*B), p(B), r(0, 3*B), p(2*B + 7), r(0, 3*B)}},
		{"punch to zero", []op{w(0, 2*B), p(0), r(0, B), w(50, 50), r(0, B)}},
		{"punch up", []op{w(0, 100), p(10 * B), r(0, 11*B), w(5*B, 10), r(0, 11*B)}},
		{"punch creates", []op{p(0), r(0, 10), p(7), r(0, 10)}},
		{"appends", []op{w(0, 5000), w(5000, 70000), w(75000, 1), w(75001, 2*B), r(0, 4*B)}},
		{"synced writes", []op{ws(3, 2*B), ws(B, 1), r(0, 3*B)}},
		{"one MiB unaligned", []op{w(12345, 1<<20), r(0, 2<<20), r(12345, 1<<20)}},
		{"largest frame", []op{w(7, api.MaxFramePayload), r(0, api.MaxFramePayload)}},
	}
}

func TestReadWrite(t *testing.T) {
	cli := startEtcd(t)
	o := startOST(t, cli, testConfig(t, "rw"), nil)
	c := newClient(t)
	ctx := t.Context()
	// Each shape at both checksum granularities: 64 KiB blocks (a small
	// object's attribute, a large one moving to a sidecar part-way), and
	// 4 KiB blocks (sidecars only, as on a file system without user
	// attributes), B being the block.
	for gi, g := range []struct {
		name     string
		B        int64
		sidecars bool
	}{{"64 KiB blocks", inlineBlockSize, false}, {"4 KiB blocks", sidecarBlockSize, true}} {
		t.Run(g.name, func(t *testing.T) {
			o.store.noXattr.Store(g.sidecars)
			defer o.store.noXattr.Store(false)
			for i, tc := range readWriteCases(g.B) {
				t.Run(tc.name, func(t *testing.T) {
					obj := uint64(0x1000 + gi*0x100 + i)
					var m model
					for j, step := range tc.ops {
						switch step.kind {
						case "write":
							d := pattern(i*100+j, step.n)
							if err := c.Write(ctx, o.Addr(), obj, step.off, d, step.sync); err != nil {
								t.Fatalf("step %d: write %d@%d: %v", j, step.n, step.off, err)
							}
							m.write(step.off, d)
						case "punch":
							if err := c.Punch(ctx, o.Addr(), obj, step.off); err != nil {
								t.Fatalf("step %d: punch %d: %v", j, step.off, err)
							}
							m.punch(step.off)
						case "read":
							checkRead(t, ctx, c, o.Addr(), obj, &m, step.off, step.n)
						}
						size, err := c.Stat(ctx, o.Addr(), obj)
						if err != nil || size != int64(len(m.b)) {
							t.Fatalf("step %d: size %d, %v; want %d", j, size, err, len(m.b))
						}
					}
					if len(m.b) <= 16<<20 {
						for off := 0; off <= len(m.b); off += 4 << 20 {
							checkRead(t, ctx, c, o.Addr(), obj, &m, int64(off), 4<<20+1)
						}
					}

				})
			}
		})
	}

	t.Run("one TiB offset", func(t *testing.T) {
		const obj, off = 0x7e7a, 1 << 40
		if err := c.Write(ctx, o.Addr(), obj, off+3, []byte("far"), false); err != nil {
			t.Fatal(err)
		}
		if size, err := c.Stat(ctx, o.Addr(), obj); size != off+6 || err != nil {
			t.Fatalf("size %d, %v", size, err)
		}
		buf := make([]byte, 2*inlineBlockSize)
		n, err := c.Read(ctx, o.Addr(), obj, off-inlineBlockSize, buf)
		want := append(make([]byte, inlineBlockSize+3), "far"...)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("read %d bytes, %v", n, err)
		}
	})

	t.Run("absent object", func(t *testing.T) {
		const obj = 0xab5e17
		buf := make([]byte, 10)
		if n, err := c.Read(ctx, o.Addr(), obj, 0, buf); n != 0 || err != nil {
			t.Errorf("read: %d, %v; want 0, nil", n, err)
		}
		if size, err := c.Stat(ctx, o.Addr(), obj); size != 0 || err != nil {
			t.Errorf("stat: %d, %v; want 0, nil", size, err)
		}
		if err := c.Sync(ctx, o.Addr(), obj); err != nil {
			t.Errorf("sync: %v", err)
		}
		if n, err := c.Destroy(ctx, o.Addr(), []uint64{obj}); n != 1 || err != nil {
			t.Errorf("destroy: %d, %v; want 1, nil", n, err)
		}
	})

	t.Run("destroy and statfs", func(t *testing.T) {
		const obj = 0xde57
		before, err := c.Statfs(ctx, o.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if before.Index != o.Index() || before.Total == 0 || before.Avail > before.Total {
			t.Fatalf("statfs %+v", before)
		}
		if err := c.Write(ctx, o.Addr(), obj, 0, pattern(1, 3*inlineBlockSize), false); err != nil {
			t.Fatal(err)
		}
		mid, _ := c.Statfs(ctx, o.Addr())
		if mid.Objects != before.Objects+1 {
			t.Errorf("objects %d after create, want %d", mid.Objects, before.Objects+1)
		}
		if _, err := c.Destroy(ctx, o.Addr(), []uint64{obj}); err != nil {
			t.Fatal(err)
		}
		after, _ := c.Statfs(ctx, o.Addr())
		if after.Objects != before.Objects {
			t.Errorf("objects %d after destroy, want %d", after.Objects, before.Objects)
		}
		if size, err := c.Stat(ctx, o.Addr(), obj); size != 0 || err != nil {
			t.Errorf("stat after destroy: %d, %v", size, err)
		}
		// A re-created object starts empty, with no stale checksums.
		if err := c.Write(ctx, o.Addr(), obj, 2*inlineBlockSize, []byte("x"), false); err != nil {
			t.Fatal(err)
		}
		var m model
		m.write(2*inlineBlockSize, []byte("x"))
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, 4*inlineBlockSize)
		// A small object is one file: its checksums are an attribute.
		path := filepath.Join(o.cfg.DataDir, "objects", "57", hexObj(obj))
		slots := inlineSlots(t, path)
		if len(slots) != inlineBlocks*slotSize {
			t.Fatalf("inline checksums of %d bytes, want %d", len(slots), inlineBlocks*slotSize)
		}
		for b := range int64(inlineBlocks) {
			_, state := getSlot(slots[b*slotSize:])
			want := slotHole // only block 2 was written
			if b == 2 {
				want = slotValid
			}
			if state != want {
				t.Errorf("slot %d: state %d, want %d", b, state, want)
			}
		}
		if _, err := os.Stat(path + ".crc"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a small object has a sidecar: %v", err)
		}
	})

	t.Run("destroy many at once", func(t *testing.T) {
		// Written, absent and written again, in one list; then more than
		// one request's worth, which the client splits.
		objs := []uint64{0xd1, 0xd2, 0xd3}
		for _, obj := range []uint64{0xd1, 0xd3} {
			if err := c.Write(ctx, o.Addr(), obj, 0, pattern(int(obj), inlineBlockSize+7), false); err != nil {
				t.Fatal(err)
			}
		}
		before, _ := c.Statfs(ctx, o.Addr())
		if n, err := c.Destroy(ctx, o.Addr(), objs); n != len(objs) || err != nil {
			t.Fatalf("destroy %d objects: %d, %v", len(objs), n, err)
		}
		after, _ := c.Statfs(ctx, o.Addr())
		if after.Objects != before.Objects-2 {
			t.Errorf("objects %d after destroying two of them, want %d", after.Objects, before.Objects-2)
		}
		for _, obj := range objs {
			if size, err := c.Stat(ctx, o.Addr(), obj); size != 0 || err != nil {
				t.Errorf("object %x after destroy: size %d, %v", obj, size, err)
			}
		}
		many := make([]uint64, api.MaxDestroyBatch+5)
		for i := range many {
			many[i] = 0xe000 + uint64(i)
		}
		if err := c.Write(ctx, o.Addr(), many[len(many)-1], 0, []byte("last"), false); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Destroy(ctx, o.Addr(), many); n != len(many) || err != nil {
			t.Fatalf("destroy %d objects: %d, %v", len(many), n, err)
		}
		if size, _ := c.Stat(ctx, o.Addr(), many[len(many)-1]); size != 0 {
			t.Errorf("the last object of the second request still has %d bytes", size)
		}
	})
}

// objectPath is where obj's data file lives under an OST's data directory.
func objectPath(dir string, obj uint64) string {
	return filepath.Join(dir, "objects", fmt.Sprintf("%02x", obj&0xff), hexObj(obj))
}

// flipBit flips one bit of the file at off.
func flipBit(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCorruption(t *testing.T) {
	cli := startEtcd(t)
	var logs syncBuffer
	o := startOST(t, cli, testConfig(t, "corrupt"), testLogger(t, &logs))
	c := newClient(t)
	ctx := t.Context()
	addr := o.Addr()
	const B = inlineBlockSize

	// Object 1: four written blocks, a bit flipped in block 1.
	const obj = 0x77
	data := pattern(7, 4*B)
	if err := c.Write(ctx, addr, obj, 0, data, true); err != nil {
		t.Fatal(err)
	}
	flipBit(t, objectPath(o.cfg.DataDir, obj), B+1234)

	// Object 2: a hole (block 1 never written) that gains bytes on disk.
	const holey = 0x78
	if err := c.Write(ctx, addr, holey, 0, pattern(8, 10), false); err != nil {
		t.Fatal(err)
	}
	if err := c.Punch(ctx, addr, holey, 3*B); err != nil {
		t.Fatal(err)
	}
	flipBit(t, objectPath(o.cfg.DataDir, holey), B+5)

	// Object 3: its checksum slot for block 0 damaged (in the attribute
	// of a small object), and object 5 the same in a sidecar.
	const badslot, bigBadslot = 0x79, 0x7b
	if err := c.Write(ctx, addr, badslot, 0, pattern(9, 2*B), false); err != nil {
		t.Fatal(err)
	}
	flipSlotBit(t, objectPath(o.cfg.DataDir, badslot), 0, 6)
	if err := c.Write(ctx, addr, bigBadslot, 0, pattern(9, (inlineBlocks+2)*B), false); err != nil {
		t.Fatal(err)
	}
	flipSlotBit(t, objectPath(o.cfg.DataDir, bigBadslot), 0, 6)

	// Object 4: a bit flipped in the partial last block, past the bytes a
	// truncation keeps.
	const tail = 0x7a
	if err := c.Write(ctx, addr, tail, 0, pattern(10, B+100), false); err != nil {
		t.Fatal(err)
	}
	flipBit(t, objectPath(o.cfg.DataDir, tail), B+50)

	cases := []struct {
		name  string
		obj   uint64
		read  bool
		off   int64
		n     int
		code  api.Code
		check []byte // expected bytes on success
	}{
		{"read the corrupt block", obj, true, B, B, api.CodeCorrupt, nil},
		{"read one byte of the corrupt block", obj, true, B + 1234, 1, api.CodeCorrupt, nil},
		{"read spanning the corrupt block", obj, true, 0, 4 * B, api.CodeCorrupt, nil},
		{"read the block before", obj, true, 0, B, api.CodeOK, data[:B]},
		{"read the blocks after", obj, true, 2 * B, 2 * B, api.CodeOK, data[2*B:]},
		{"partial write into the corrupt block", obj, false, B + 10, 10, api.CodeCorrupt, nil},
		{"write spanning into the corrupt block", obj, false, B - 5, 10, api.CodeCorrupt, nil},
		{"still corrupt after refused writes", obj, true, B, B, api.CodeCorrupt, nil},
		{"hole with bytes on disk", holey, true, B, B, api.CodeCorrupt, nil},
		{"write into a corrupt hole", holey, false, B + 100, 1, api.CodeCorrupt, nil},
		{"block before the hole", holey, true, 0, 10, api.CodeOK, pattern(8, 10)},
		{"damaged checksum slot", badslot, true, 0, 10, api.CodeCorrupt, nil},
		{"other block of damaged slot object", badslot, true, B, B, api.CodeOK, pattern(9, 2*B)[B:]},
		{"damaged checksum slot in a sidecar", bigBadslot, true, 0, 10, api.CodeCorrupt, nil},
		{"other block of damaged sidecar object", bigBadslot, true, B, B, api.CodeOK, pattern(9, 2*B)[B:]},
		{"corrupt partial last block", tail, true, B, 100, api.CodeCorrupt, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.read {
				buf := make([]byte, tc.n)
				var k int
				k, err = c.Read(ctx, addr, tc.obj, tc.off, buf)
				if err == nil && tc.check != nil && len(tc.check) > 0 && !bytes.Equal(buf[:k], tc.check) {
					t.Fatalf("read returned wrong bytes")
				}
			} else {
				err = c.Write(ctx, addr, tc.obj, tc.off, pattern(99, tc.n), false)
			}
			if got := codeOf(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
		})
	}

	t.Run("punch into a corrupt block is refused", func(t *testing.T) {
		if err := c.Punch(ctx, addr, tail, B+10); codeOf(err) != api.CodeCorrupt {
			t.Fatalf("punch: %v, want corrupt", err)
		}
		if size, _ := c.Stat(ctx, addr, tail); size != B+100 {
			t.Fatalf("size %d after refused punch, want %d", size, B+100)
		}
	})

	t.Run("full-block overwrite replaces the corrupt block", func(t *testing.T) {
		fresh := pattern(11, B)
		if err := c.Write(ctx, addr, obj, B, fresh, false); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4*B)
		if _, err := c.Read(ctx, addr, obj, 0, got); err != nil {
			t.Fatal(err)
		}
		want := append(append(append([]byte{}, data[:B]...), fresh...), data[2*B:]...)
		if !bytes.Equal(got, want) {
			t.Fatal("wrong bytes after the overwrite")
		}
	})

	t.Run("log line names object block offset and crcs", func(t *testing.T) {
		var line string
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, "checksum mismatch") && strings.Contains(l, "object="+hexObj(obj)) {
				line = l
				break
			}
		}
		if line == "" {
			t.Fatalf("no checksum mismatch line for %s in:\n%s", hexObj(obj), logs.String())
		}
		for _, want := range []string{"level=ERROR", "block=1", fmt.Sprintf("offset=%d", B), "expected=", "actual="} {
			if !strings.Contains(line, want) {
				t.Errorf("log line %q lacks %q", line, want)
			}
		}
	})
}

// rawRequest sends raw bytes on a fresh connection and returns the reply
// header, if any, and the connection.
func rawRequest(t *testing.T, addr string, req []byte, closeWrite bool) (*api.RespHeader, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		conn.(*net.TCPConn).CloseWrite()
	}
	return readReply(t, conn), conn
}

// readReply reads one reply, or returns nil if the connection ends first.
func readReply(t *testing.T, conn net.Conn) *api.RespHeader {
	t.Helper()
	var hb [api.RespHeaderSize]byte
	if _, err := io.ReadFull(conn, hb[:]); err != nil {
		return nil
	}
	h, err := api.DecodeRespHeader(hb[:])
	if err != nil {
		t.Fatalf("bad reply header: %v", err)
	}
	if _, err := io.CopyN(io.Discard, conn, int64(h.PayloadLen)); err != nil {
		t.Fatalf("reply payload: %v", err)
	}
	return &h
}

// closedByPeer reports whether the server has hung up on conn.
func closedByPeer(conn net.Conn) bool {
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := conn.Read(make([]byte, 1))
	return errors.Is(err, io.EOF)
}

func header(h api.ReqHeader) []byte {
	b := make([]byte, api.ReqHeaderSize)
	api.EncodeReqHeader(b, h)
	return b
}

func TestMalformedFrames(t *testing.T) {
	cli := startEtcd(t)
	o := startOST(t, cli, testConfig(t, "frames"), nil)
	c := newClient(t)
	ctx := t.Context()
	if err := c.Write(ctx, o.Addr(), 1, 0, []byte("hello"), false); err != nil {
		t.Fatal(err)
	}
	badMagic := header(api.ReqHeader{Op: api.OSTStatFS})
	badMagic[0] = 'X'
	badVersion := header(api.ReqHeader{Op: api.OSTStatFS})
	badVersion[2] = 99
	unknownOp := header(api.ReqHeader{Op: api.OSTStatFS})
	unknownOp[3] = 200
	huge := header(api.ReqHeader{Op: api.OSTWrite, Object: 1})
	binary.BigEndian.PutUint32(huge[28:], 1<<30)
	hugeRead := header(api.ReqHeader{Op: api.OSTRead, Object: 1, Length: 1 << 31})
	readWithPayload := append(header(api.ReqHeader{Op: api.OSTRead, Object: 1, PayloadLen: 10}), make([]byte, 10)...)
	ragged := append(header(api.ReqHeader{Op: api.OSTDestroy, PayloadLen: 12}), make([]byte, 12)...)
	farWrite := append(header(api.ReqHeader{Op: api.OSTWrite, Object: 1, Offset: 1 << 62, PayloadLen: 3}), "abc"...)

	type want int
	const (
		replyThenClose want = iota // unframed: the stream cannot be trusted
		replyKeepOpen              // framed but refused: payload skipped
		justClose                  // cut short: nothing to answer
	)
	cases := []struct {
		name       string
		req        []byte
		closeWrite bool
		want       want
		code       api.Code
	}{
		{"garbage", bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 10), false, replyThenClose, api.CodeInvalid},
		{"bad magic", badMagic, false, replyThenClose, api.CodeInvalid},
		{"bad version", badVersion, false, replyThenClose, api.CodeInvalid},
		{"huge payload length", huge, false, replyThenClose, api.CodeInvalid},
		{"unknown op", unknownOp, false, replyKeepOpen, api.CodeInvalid},
		{"huge read length", hugeRead, false, replyKeepOpen, api.CodeInvalid},
		{"payload on a read", readWithPayload, false, replyKeepOpen, api.CodeInvalid},
		{"offset out of range", farWrite, false, replyKeepOpen, api.CodeTooBig},
		{"destroy list not of whole ids", ragged, false, replyKeepOpen, api.CodeInvalid},
		{"destroy list too long", append(header(api.ReqHeader{Op: api.OSTDestroy, PayloadLen: 8 * (api.MaxDestroyBatch + 1)}), make([]byte, 8*(api.MaxDestroyBatch+1))...), false, replyKeepOpen, api.CodeInvalid},
		{"short header then EOF", []byte{0x53, 0x54, 1, 2, 0}, true, justClose, ""},
		{"payload cut short", append(header(api.ReqHeader{Op: api.OSTWrite, Object: 1, PayloadLen: 1000}), make([]byte, 10)...), true, justClose, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, conn := rawRequest(t, o.Addr(), tc.req, tc.closeWrite)
			switch {
			case tc.want == justClose && resp != nil:
				t.Errorf("unexpected reply %+v", *resp)
			case tc.want != justClose && resp == nil:
				t.Fatalf("no reply, want code %q", tc.code)
			case tc.want != justClose && resp.Status != tc.code:
				t.Errorf("reply code %q, want %q", resp.Status, tc.code)
			}
			if tc.want == replyKeepOpen {
				// Still in step: the same connection serves the next request.
				if _, err := conn.Write(header(api.ReqHeader{Op: api.OSTGetSize, Object: 1})); err != nil {
					t.Fatal(err)
				}
				if r := readReply(t, conn); r == nil || r.Status != api.CodeOK || r.Value != 5 {
					t.Fatalf("next request on the same connection: %+v", r)
				}
			} else if !closedByPeer(conn) {
				t.Error("connection left open")
			}
			// Fresh connections still work and the object is unchanged.
			buf := make([]byte, 10)
			n, err := c.Read(ctx, o.Addr(), 1, 0, buf)
			if err != nil || string(buf[:n]) != "hello" {
				t.Fatalf("read after a bad frame: %q, %v", buf[:n], err)
			}
		})
	}
}

// A write skips reserving its blocks only when the file system has room to
// spare beyond it; a small or nearly full one always reserves (TestNoSpace).
func TestRoomAfter(t *testing.T) {
	const mib, gib = 1 << 20, 1 << 30
	for _, c := range []struct {
		avail, total, n int64
		want            bool
	}{
		{74 * gib, 252 * gib, mib, true},
		{4 * gib, 252 * gib, mib, false}, // under 2% of the file system left
		{3 * mib, 4 * mib, 4096, false},  // a small file system always reserves
		{300 * mib, gib, 8 * mib, true},  // 284 MiB left beyond the write
		{270 * mib, gib, 8 * mib, false}, // 254 MiB: under the 256 MiB margin
	} {
		if got := roomAfter(c.avail, c.total, c.n); got != c.want {
			t.Errorf("roomAfter(avail %d, total %d, write %d) = %v, want %v", c.avail, c.total, c.n, got, c.want)
		}
	}
}

func TestNoSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as the data directory")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount tmpfs (%v)", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	cli := startEtcd(t)
	cfg := testConfig(t, "nospace")
	cfg.DataDir = filepath.Join(dir, "ost")
	o := startOST(t, cli, cfg, nil)
	c := newClient(t)
	ctx := t.Context()
	addr := o.Addr()

	const obj = 0x5
	chunk := 256 * kib
	var m model
	var werr error
	for i := 0; i < 64 && werr == nil; i++ {
		d := pattern(i, chunk)
		// Unaligned, so the failing write also has edge blocks to merge.
		off := int64(i*chunk + 100)
		if werr = c.Write(ctx, addr, obj, off, d, false); werr == nil {
			m.write(off, d)
		}
	}
	if werr == nil {
		t.Fatal("wrote 16 MiB into a 4 MiB tmpfs without an error")
	}
	if got := codeOf(werr); got != api.CodeNoSpace {
		t.Fatalf("write on a full disk: code %q (%v), want %q", got, werr, api.CodeNoSpace)
	}
	// The refused write changed nothing: everything acknowledged reads
	// back, with valid checksums, and the size is unchanged.
	checkRead(t, ctx, c, addr, obj, &m, 0, len(m.b)+inlineBlockSize)
	if size, _ := c.Stat(ctx, addr, obj); size != int64(len(m.b)) {
		t.Fatalf("size %d after a refused write, want %d", size, len(m.b))
	}
	if err := c.Write(ctx, addr, 0x6, 0, pattern(1, 1<<20), false); codeOf(err) != api.CodeNoSpace {
		t.Fatalf("new object on a full disk: %v, want no_space", err)
	}
	st, err := c.Statfs(ctx, addr)
	if err != nil || st.Total == 0 || st.Total > 4<<20 {
		t.Fatalf("statfs %+v, %v", st, err)
	}
	// Freeing space lets writes through again.
	if err := c.Punch(ctx, addr, obj, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, addr, 0x6, 0, pattern(1, 1<<20), false); err != nil {
		t.Fatalf("write after freeing space: %v", err)
	}
}

// socketsFor answers LocalSocket for one OST address and counts the asks.
type socketsFor struct {
	addr, path string
	asked      atomic.Int32
}

func (s *socketsFor) LocalSocket(addr string) (string, bool) {
	s.asked.Add(1)
	return s.path, addr == s.addr
}

// An OST serves its data path on a Unix socket too, registered with this
// machine's boot id; a client on the machine dials it, and TCP when the
// socket cannot be dialled.
func TestUnixSocket(t *testing.T) {
	cli := startEtcd(t)
	cfg := testConfig(t, "sock")
	o := startOST(t, cli, cfg, nil)
	info, ok := registered(t, cli, cfg.FSName, o.Index())
	if !ok {
		t.Fatal("OST not registered")
	}
	if want := filepath.Join(cfg.DataDir, "ost.sock"); info.Socket != want || info.Host == "" || info.Host != api.HostID() {
		t.Fatalf("registered socket %q on host %q, want %q on %q", info.Socket, info.Host, want, api.HostID())
	}
	ctx := t.Context()
	const obj = 0x77
	data := pattern(3, 200_000)
	for _, path := range []string{info.Socket, filepath.Join(t.TempDir(), "absent.sock")} {
		sockets := &socketsFor{addr: o.Addr(), path: path}
		c := newClient(t)
		c.Sockets = sockets
		if err := c.Write(ctx, o.Addr(), obj, 0, data, false); err != nil {
			t.Fatalf("write with socket %s: %v", path, err)
		}
		got := make([]byte, len(data))
		if n, err := c.Read(ctx, o.Addr(), obj, 0, got); err != nil || !bytes.Equal(got[:n], data) {
			t.Fatalf("read back with socket %s: %d bytes, %v", path, n, err)
		}
		if sockets.asked.Load() == 0 {
			t.Fatal("the client never asked for a local socket")
		}
	}
	// The socket is a full data path of its own.
	conn, err := net.Dial("unix", info.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(header(api.ReqHeader{Op: api.OSTGetSize, Object: obj})); err != nil {
		t.Fatal(err)
	}
	if h := readReply(t, conn); h == nil || h.Status != api.CodeOK || h.Value != uint64(len(data)) {
		t.Fatalf("get-size over the socket: %+v, want size %d", h, len(data))
	}
	// A socket file a crash left behind does not keep the next start off it.
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}
	stale, err := net.Listen("unix", info.Socket)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(info.Socket); err != nil {
		t.Fatal(err)
	}
	o = startOST(t, cli, cfg, nil)
	c := newClient(t)
	c.Sockets = &socketsFor{addr: o.Addr(), path: info.Socket}
	if size, err := c.Stat(ctx, o.Addr(), obj); err != nil || size != int64(len(data)) {
		t.Fatalf("after restart: size %d, %v", size, err)
	}
	if info, _ := registered(t, cli, cfg.FSName, o.Index()); info.Socket == "" {
		t.Fatal("restarted OST registered no socket")
	}
}

// Reads through the memory an OST shares with a client on its machine
// return what socket reads return, checksums verified; clients that cannot
// share (TCP) read through the socket; bad share requests are refused.
func TestSharedReads(t *testing.T) {
	cli := startEtcd(t)
	cfg := testConfig(t, "shared")
	o := startOST(t, cli, cfg, nil)
	info, _ := registered(t, cli, cfg.FSName, o.Index())
	ctx := t.Context()
	addr := o.Addr()
	const B = inlineBlockSize
	const obj = 0x91
	var m model
	plain := newClient(t)
	d := pattern(11, 3*B+500)
	if err := plain.Write(ctx, addr, obj, 100, d, false); err != nil {
		t.Fatal(err)
	}
	m.write(100, d)
	if err := plain.Punch(ctx, addr, obj, 6*B); err != nil { // a hole to the end
		t.Fatal(err)
	}
	m.punch(6 * B)

	local := newClient(t)
	local.Sockets = &socketsFor{addr: addr, path: info.Socket}
	remote := newClient(t) // TCP only
	cases := []struct{ off, n int }{{0, 10}, {100, 3*B + 500}, {B - 7, 14}, {5, 1 << 20}, {3 * B, 2 * B}, {6*B - 3, 100}, {7 * B, 10}}
	for _, c := range []*api.OSTClient{local, remote} {
		for _, tc := range cases {
			dest := make([]byte, tc.n)
			data, done, err := c.ReadShared(ctx, addr, obj, int64(tc.off), dest)
			if err != nil {
				t.Fatalf("read %d at %d: %v", tc.n, tc.off, err)
			}
			want := m.read(int64(tc.off), tc.n)
			if len(want) > 6*B-tc.off {
				want = want[:max(6*B-tc.off, 0)]
			}
			if !bytes.Equal(data, want) {
				t.Fatalf("read %d at %d: %d bytes, want %d; first difference at %d", tc.n, tc.off, len(data), len(want), firstDiff(data, want))
			}
			done()
		}
	}
	// The shared path really is shared memory, not dest.
	dest := make([]byte, 10)
	data, done, err := local.ReadShared(ctx, addr, obj, 100, dest)
	if err != nil {
		t.Fatal(err)
	}
	if &data[0] == &dest[0] {
		t.Fatal("a local read came through the socket")
	}
	done()

	// A flipped bit is found on the shared path too.
	if err := plain.Sync(ctx, addr, obj); err != nil {
		t.Fatal(err)
	}
	flipBit(t, objectPath(o.cfg.DataDir, obj), B+1234)
	if _, _, err := local.ReadShared(ctx, addr, obj, B, make([]byte, 100)); codeOf(err) != api.CodeCorrupt {
		t.Fatalf("shared read of a corrupt block: %v, want corrupt", err)
	}

	// Refusals: a share on TCP, sizes out of bounds, a shared read
	// without a region. Each is an error reply on a working connection.
	for _, tc := range []struct {
		what    string
		network string
		h       api.ReqHeader
	}{
		{"share over TCP", "tcp", api.ReqHeader{Op: api.OSTShare, Length: 4096}},
		{"empty region", "unix", api.ReqHeader{Op: api.OSTShare}},
		{"huge region", "unix", api.ReqHeader{Op: api.OSTShare, Length: api.MaxSharedRegion + 1}},
		{"shared read without region", "unix", api.ReqHeader{Op: api.OSTRead, Object: obj, Length: 10, Flags: api.FlagShared}},
	} {
		target := addr
		if tc.network == "unix" {
			target = info.Socket
		}
		conn, err := net.Dial(tc.network, target)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(header(tc.h)); err != nil {
			t.Fatal(err)
		}
		if h := readReply(t, conn); h == nil || h.Status != api.CodeInvalid {
			t.Fatalf("%s: reply %+v, want invalid", tc.what, h)
		}
		if _, err := conn.Write(header(api.ReqHeader{Op: api.OSTGetSize, Object: obj})); err != nil {
			t.Fatal(err)
		}
		if h := readReply(t, conn); h == nil || h.Status != api.CodeOK || h.Value != 6*B {
			t.Fatalf("%s: the connection no longer serves: %+v", tc.what, h)
		}
		conn.Close()
	}
}

// registered returns the OSTInfo under an OST's key, if any.
func registered(t *testing.T, cli *clientv3.Client, fsname string, idx uint32) (api.OSTInfo, bool) {
	t.Helper()
	resp, err := cli.Get(t.Context(), api.OSTKey(fsname, idx))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return api.OSTInfo{}, false
	}
	var info api.OSTInfo
	if err := json.Unmarshal(resp.Kvs[0].Value, &info); err != nil {
		t.Fatal(err)
	}
	return info, true
}

func TestRegistration(t *testing.T) {
	cli := startEtcd(t)
	const fs = "reg"
	cfgA, cfgB := testConfig(t, fs), testConfig(t, fs)
	a := startOST(t, cli, cfgA, nil)
	b := startOST(t, cli, cfgB, nil)

	t.Run("auto allocation gives 0 then 1", func(t *testing.T) {
		if a.Index() != 0 || b.Index() != 1 {
			t.Fatalf("indexes %d, %d; want 0, 1", a.Index(), b.Index())
		}
	})
	t.Run("keys in etcd", func(t *testing.T) {
		for _, o := range []*testOST{a, b} {
			info, ok := registered(t, cli, fs, o.Index())
			if !ok {
				t.Fatalf("OST %d not registered", o.Index())
			}
			if info.Addr != o.Addr() || info.Index != o.Index() || info.UUID != o.id.UUID {
				t.Errorf("registered %+v, want addr %s index %d uuid %s", info, o.Addr(), o.Index(), o.id.UUID)
			}
			resp, err := cli.Get(t.Context(), api.OSTIndexKey(fs, o.Index()))
			if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != o.id.UUID || resp.Kvs[0].Lease != 0 {
				t.Errorf("index key: %v, %v", resp, err)
			}
		}
	})
	t.Run("registry sees both", func(t *testing.T) {
		reg := api.NewOSTRegistry(cli, fs, testLogger(t, nil))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { reg.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		<-reg.Ready()
		if l := reg.List(); len(l) != 2 || l[0].Addr != a.Addr() || l[1].Addr != b.Addr() {
			t.Errorf("registry lists %+v", l)
		}
	})
	t.Run("lost lease is re-registered", func(t *testing.T) {
		resp, err := cli.Get(t.Context(), api.OSTKey(fs, a.Index()))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatal(resp, err)
		}
		lease := clientv3.LeaseID(resp.Kvs[0].Lease)
		if _, err := cli.Revoke(t.Context(), lease); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "re-registration", func() bool {
			resp, err := cli.Get(t.Context(), api.OSTKey(fs, a.Index()))
			return err == nil && len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) != lease
		})
	})
	t.Run("cancel removes the key", func(t *testing.T) {
		if err := a.stop(); err != nil {
			t.Fatal(err)
		}
		if _, ok := registered(t, cli, fs, 0); ok {
			t.Fatal("OST 0 still registered after Run returned")
		}
		if _, ok := registered(t, cli, fs, 1); !ok {
			t.Fatal("OST 1 vanished")
		}
	})
	t.Run("restart keeps the index", func(t *testing.T) {
		a2 := startOST(t, cli, cfgA, nil)
		if a2.Index() != 0 || a2.id.UUID != a.id.UUID {
			t.Fatalf("restarted as index %d uuid %s, want 0 %s", a2.Index(), a2.id.UUID, a.id.UUID)
		}
		if info, ok := registered(t, cli, fs, 0); !ok || info.Addr != a2.Addr() {
			t.Fatalf("restarted OST registered as %+v %v", info, ok)
		}
		var id identity
		raw, _ := os.ReadFile(filepath.Join(cfgA.DataDir, identityFile))
		if err := json.Unmarshal(raw, &id); err != nil || id.Index != 0 || id.UUID != a.id.UUID {
			t.Fatalf("ost.json %s: %v", raw, err)
		}
	})
	t.Run("third OST gets 2", func(t *testing.T) {
		c3 := startOST(t, cli, testConfig(t, fs), nil)
		if c3.Index() != 2 {
			t.Fatalf("index %d, want 2", c3.Index())
		}
	})
	t.Run("explicit index held by another OST is refused", func(t *testing.T) {
		cfg := testConfig(t, fs)
		cfg.Index = 1
		_, err := tryStartOST(t, cli, cfg, nil)
		if !errors.Is(err, ErrIndexConflict) {
			t.Fatalf("start with a taken index: %v, want ErrIndexConflict", err)
		}
	})
	t.Run("explicit free index", func(t *testing.T) {
		cfg := testConfig(t, fs)
		cfg.Index = 7
		o := startOST(t, cli, cfg, nil)
		if o.Index() != 7 {
			t.Fatalf("index %d, want 7", o.Index())
		}
	})
	t.Run("interrupted first start finds its own claim", func(t *testing.T) {
		// A crash between the claim in etcd and the write of ost.json.
		cfg := testConfig(t, fs)
		id := identity{UUID: newUUID(), Index: -1, FSName: fs}
		if err := saveIdentity(cfg.DataDir, id); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(t.Context(), api.OSTIndexKey(fs, 4), id.UUID); err != nil {
			t.Fatal(err)
		}
		o := startOST(t, cli, cfg, nil)
		if o.Index() != 4 {
			t.Fatalf("index %d, want the claimed 4", o.Index())
		}
	})
	t.Run("index key taken over while stopped is refused", func(t *testing.T) {
		cfg := testConfig(t, fs)
		o := startOST(t, cli, cfg, nil)
		idx := o.Index()
		if err := o.stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(t.Context(), api.OSTIndexKey(fs, idx), "someone-else"); err != nil {
			t.Fatal(err)
		}
		if _, err := tryStartOST(t, cli, cfg, nil); !errors.Is(err, ErrIndexConflict) {
			t.Fatalf("restart: %v, want ErrIndexConflict", err)
		}
	})
	t.Run("index key lost from etcd is claimed again", func(t *testing.T) {
		cfg := testConfig(t, fs)
		o := startOST(t, cli, cfg, nil)
		idx, uuid := o.Index(), o.id.UUID
		if err := o.stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Delete(t.Context(), api.OSTIndexKey(fs, idx)); err != nil {
			t.Fatal(err)
		}
		o2 := startOST(t, cli, cfg, nil)
		resp, err := cli.Get(t.Context(), api.OSTIndexKey(fs, idx))
		if o2.Index() != idx || err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != uuid {
			t.Fatalf("index %d, key %v, %v", o2.Index(), resp, err)
		}
	})
	t.Run("data dir of another index", func(t *testing.T) {
		cfg := cfgB
		cfg.Index = 5
		if _, err := New(cfg, Deps{Etcd: cli}); err == nil {
			t.Fatal("New accepted index 5 for the data directory of OST 1")
		}
	})
	t.Run("data dir of another file system", func(t *testing.T) {
		cfg := cfgB
		cfg.FSName = "other"
		if _, err := New(cfg, Deps{Etcd: cli}); err == nil {
			t.Fatal("New accepted the data directory of another file system")
		}
	})
}

func TestRestart(t *testing.T) {
	cli := startEtcd(t)
	cfg := testConfig(t, "restart")
	o := startOST(t, cli, cfg, nil)
	c := newClient(t)
	ctx := t.Context()

	models := map[uint64]*model{}
	for i, obj := range []uint64{1, 2, 0x300} {
		m := &model{}
		d := pattern(i, 200*kib+i)
		if err := c.Write(ctx, o.Addr(), obj, int64(i*1000), d, true); err != nil {
			t.Fatal(err)
		}
		m.write(int64(i*1000), d)
		models[obj] = m
	}
	if err := c.Punch(ctx, o.Addr(), 2, 70000); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx, o.Addr(), 2); err != nil {
		t.Fatal(err)
	}
	models[2].punch(70000)
	// Objects whose checksums get damaged while the OST is down: two
	// large ones (sidecars), two small ones (inline).
	large := (inlineBlocks + 1) * inlineBlockSize
	damaged := []uint64{0x400, 0x401, 0x402, 0x403}
	for i, obj := range damaged {
		n := 1000
		if i < 2 {
			n = large
		}
		if err := c.Write(ctx, o.Addr(), obj, 0, pattern(int(obj), n), true); err != nil {
			t.Fatal(err)
		}
	}
	idx := o.Index()
	if err := o.stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(objectPath(cfg.DataDir, 0x400) + ".crc"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(objectPath(cfg.DataDir, 0x401)+".crc", []byte("not a header at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Removexattr(objectPath(cfg.DataDir, 0x402), inlineAttr); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(objectPath(cfg.DataDir, 0x403), inlineAttr, []byte("12345"), 0); err != nil {
		t.Fatal(err)
	}

	o2 := startOST(t, cli, cfg, nil)
	for _, obj := range damaged {
		if _, err := c.Read(ctx, o2.Addr(), obj, 0, make([]byte, 10)); codeOf(err) != api.CodeCorrupt {
			t.Errorf("object %x with damaged checksums: read %v, want corrupt", obj, err)
		}
	}
	if n, err := c.Destroy(ctx, o2.Addr(), damaged); n != len(damaged) || err != nil {
		t.Fatalf("destroy: %d, %v; want %d, nil", n, err, len(damaged))
	}
	if o2.Index() != idx {
		t.Fatalf("index %d after restart, want %d", o2.Index(), idx)
	}
	for obj, m := range models {
		checkRead(t, ctx, c, o2.Addr(), obj, m, 0, len(m.b)+10)
	}
	st, err := c.Statfs(ctx, o2.Addr())
	if err != nil || st.Objects != uint64(len(models)) {
		t.Fatalf("statfs after restart: %+v, %v; want %d objects", st, err, len(models))
	}
}

func TestConcurrency(t *testing.T) {
	cli := startEtcd(t)
	o := startOST(t, cli, testConfig(t, "conc"), nil)
	c := newClient(t)
	ctx := t.Context()
	addr := o.Addr()

	const (
		shared  = 0x5a5a
		writers = 6
		rounds  = 20
		piece   = 10000 // unaligned: neighbours share edge blocks
	)
	var wg sync.WaitGroup
	errs := make(chan error, 3*writers)
	// Disjoint ranges of one object, interleaved so that edge blocks are
	// read-modify-written by different goroutines.
	for g := range writers {
		wg.Go(func() {
			for r := range rounds {
				off := int64((r*writers + g) * piece)
				if err := c.Write(ctx, addr, shared, off, pattern(r*writers+g, piece), false); err != nil {
					errs <- fmt.Errorf("writer %d: %w", g, err)
					return
				}
			}
		})
	}
	// Other objects in parallel, each with its own writer and reader.
	for g := range writers {
		obj := uint64(0x100 + g)
		wg.Go(func() {
			var m model
			for r := range rounds {
				d := pattern(1000+r, 3*kib+r*100)
				off := int64(r * 7777)
				if err := c.Write(ctx, addr, obj, off, d, false); err != nil {
					errs <- err
					return
				}
				m.write(off, d)
				got := make([]byte, len(m.b))
				if n, err := c.Read(ctx, addr, obj, 0, got); err != nil || !bytes.Equal(got[:n], m.b) {
					errs <- fmt.Errorf("object %x round %d: %d bytes, %v", obj, r, n, err)
					return
				}
			}
		})
		wg.Go(func() {
			buf := make([]byte, 256*kib)
			for range rounds {
				if _, err := c.Read(ctx, addr, shared, 0, buf); err != nil {
					errs <- fmt.Errorf("reader: %w", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var m model
	for i := range rounds * writers {
		m.write(int64(i*piece), pattern(i, piece))
	}
	checkRead(t, ctx, c, addr, shared, &m, 0, len(m.b)+1)
}

func TestHandleCacheEviction(t *testing.T) {
	cli := startEtcd(t)
	o := startOST(t, cli, testConfig(t, "lru"), nil)
	c := newClient(t)
	ctx := t.Context()
	// A small limit, so eviction happens without creating hundreds of files.
	const limit = 16
	o.store.cache.mu.Lock()
	o.store.cache.max = limit
	o.store.cache.mu.Unlock()
	n := 4 * limit
	for i := range n {
		if err := c.Write(ctx, o.Addr(), uint64(i), int64(i), pattern(i, 100), false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		var m model
		m.write(int64(i), pattern(i, 100))
		checkRead(t, ctx, c, o.Addr(), uint64(i), &m, 0, 200)
	}
	o.store.cache.mu.Lock()
	cached := len(o.store.cache.m)
	o.store.cache.mu.Unlock()
	if cached > limit {
		t.Fatalf("%d handles cached, limit %d", cached, limit)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{DataDir: "/x", Index: -1}, true},
		{"new config", func() Config { c := NewConfig(); c.DataDir = "/x"; return c }(), true},
		{"no data dir", NewConfig(), false},
		{"bad fsname", Config{DataDir: "/x", FSName: "Bad-Name"}, false},
		{"index below -1", Config{DataDir: "/x", Index: -2}, false},
		{"lease too short", Config{DataDir: "/x", LeaseTTL: time.Millisecond}, false},
		{"bad listen address", Config{DataDir: "/x", Listen: "nowhere"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			err := cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
			if err == nil && (cfg.Listen != DefaultListen || cfg.FSName != DefaultFSName || cfg.LeaseTTL != DefaultLeaseTTL) {
				t.Errorf("defaults not filled: %+v", cfg)
			}
		})
	}
	if _, err := New(Config{DataDir: t.TempDir()}, Deps{}); err == nil {
		t.Error("New without etcd succeeded")
	}
}

// TestAllocate: fallocate reserves space; without keep-size it grows the
// object with holes that read as zeros, next to data that keeps its bytes;
// a request larger than the disk fails with no_space and changes nothing.
func TestAllocate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs as the data directory")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount tmpfs (%v)", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	cli := startEtcd(t)
	cfg := testConfig(t, "allocate")
	cfg.DataDir = filepath.Join(dir, "ost")
	o := startOST(t, cli, cfg, nil)
	c := newClient(t)
	ctx := t.Context()
	addr := o.Addr()

	const obj = 0x9
	head := pattern(1, 1000)
	if err := c.Write(ctx, addr, obj, 0, head, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Allocate(ctx, addr, obj, 0, 1<<20, true); err != nil {
		t.Fatalf("keep-size allocate: %v", err)
	}
	if size, err := c.Stat(ctx, addr, obj); err != nil || size != 1000 {
		t.Fatalf("keep-size allocate changed the size: %d %v", size, err)
	}
	if err := c.Allocate(ctx, addr, obj, 500, 300_000, false); err != nil {
		t.Fatalf("allocate: %v", err)
	}
	if size, err := c.Stat(ctx, addr, obj); err != nil || size != 300_500 {
		t.Fatalf("size after allocate %d %v, want 300500", size, err)
	}
	got := make([]byte, 300_500)
	n, err := c.Read(ctx, addr, obj, 0, got)
	if err != nil || n != len(got) {
		t.Fatalf("read %d %v", n, err)
	}
	want := make([]byte, len(got))
	copy(want, head)
	if !bytes.Equal(got, want) {
		t.Fatal("allocated range does not read as the data then zeros")
	}
	if err := c.Allocate(ctx, addr, obj, 0, 64<<20, false); api.CodeOf(err) != api.CodeNoSpace {
		t.Fatalf("allocating past the disk: %v, want no_space", err)
	}
	if size, _ := c.Stat(ctx, addr, obj); size != 300_500 {
		t.Fatalf("failed allocate changed the size to %d", size)
	}
}
