package ost

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/stria/stria/api/iobuf"
)

// FuzzStore applies a random sequence of writes, truncations and reads to
// one object, straight on the store, and checks every read against a model.
func FuzzStore(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x00\x00\x00\x10\x00\x00\x01\x00\x00\x01\x00\x02\x00\x00\x03\x00"))
	f.Add(bytes.Repeat([]byte{0, 0xff, 0x10, 0x33, 1, 0, 0x80, 0, 2, 3, 0, 0}, 4))
	f.Add([]byte{0, 0, 1, 0, 0, 1, 0, 1, 0, 0, 0x40, 0x01, 2, 0, 0, 0, 0, 3, 0, 0})
	st, err := openStore(f.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(st.close)
	var next atomic.Uint64
	f.Fuzz(func(t *testing.T, prog []byte) {
		ctx := t.Context()
		obj := next.Add(1)
		defer st.destroy(ctx, obj)
		var m model
		check := func(step int, off int64, n int) {
			res, err := st.read(ctx, obj, off, n, nil, false)
			if err != nil {
				t.Fatalf("step %d: read %d@%d: %v", step, n, off, err)
			}
			want := m.read(off, n)
			if !bytes.Equal(res.payload, want) {
				t.Fatalf("step %d: read %d@%d: %d bytes, first difference at %d", step, n, off, len(res.payload), firstDiff(res.payload, want))
			}
			if res.buf != nil {
				iobuf.Put(res.buf)
			}
		}
		// Each step: kind (1 byte), offset (3 bytes, modulo 300 KiB),
		// length (2 bytes, times 3: up to ~192 KiB).
		for step := 0; len(prog) >= 6 && step < 32; step++ {
			kind := prog[0] % 3
			off := int64(binary.BigEndian.Uint32(append([]byte{0}, prog[1:4]...)) % (300 << 10))
			n := int(binary.BigEndian.Uint16(prog[4:6])) * 3
			prog = prog[6:]
			switch kind {
			case 0:
				d := pattern(step, n)
				if _, err := st.write(ctx, obj, off, d, false); err != nil {
					t.Fatalf("step %d: write %d@%d: %v", step, n, off, err)
				}
				m.write(off, d)
			case 1:
				if err := st.punch(ctx, obj, off); err != nil {
					t.Fatalf("step %d: punch %d: %v", step, off, err)
				}
				m.punch(off)
			default:
				check(step, off, n)
			}
			size, err := st.size(ctx, obj)
			if err != nil || size != int64(len(m.b)) {
				t.Fatalf("step %d: size %d, %v; want %d", step, size, err, len(m.b))
			}
		}
		check(-1, 0, len(m.b)+1)
	})
}
