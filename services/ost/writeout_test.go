package ost

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stria/stria/api/iobuf"
)

// TestEarlyWriteout: a stream of writes to an object starts the write-out
// of every writeoutBytes of it as it goes, whatever order the writes come
// in; a small object starts none; and what was written reads back whole.
func TestEarlyWriteout(t *testing.T) {
	st, err := openStore(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	models := map[uint64]*model{}
	write := func(obj uint64, off int64, n int) {
		t.Helper()
		d := pattern(int(off), n)
		if _, err := st.write(ctx, obj, off, d, false); err != nil {
			t.Fatalf("object %d, write at %d: %v", obj, off, err)
		}
		if models[obj] == nil {
			models[obj] = &model{}
		}
		models[obj].write(off, d)
	}
	const mib = 1 << 20
	// Ten sequential 1 MiB writes: two write-outs, of 4 MiB each.
	for i := range 10 {
		write(1, int64(i)*mib, mib)
	}
	// Just under writeoutBytes in IOR-hard's records: none.
	const rec = 47008
	for k := range (writeoutBytes - 1) / rec {
		write(2, int64(k)*rec, rec)
	}
	// 4 MiB in 256 KiB pieces, last first: one write-out of the 4 MiB.
	for i := 15; i >= 0; i-- {
		write(3, int64(i)*256<<10, 256<<10)
	}
	for obj, m := range models {
		res, err := st.read(ctx, obj, 0, len(m.b), nil, false)
		if err != nil {
			t.Fatalf("object %d: read back: %v", obj, err)
		}
		if !bytes.Equal(res.payload, m.b) {
			t.Fatalf("object %d: read back %d bytes, first difference at %d", obj, len(res.payload), firstDiff(res.payload, m.b))
		}
		iobuf.Put(res.buf)
	}
	st.close() // waits for the queued write-outs
	if got, want := st.writtenOut.Load(), int64(12*mib); got != want {
		t.Fatalf("write-out started for %d bytes, want %d (8 MiB of object 1, 4 MiB of object 3)", got, want)
	}
}

// TestWriteoutSpan: the span handed out covers every write since the last
// one, in any order, and accounting starts again after it.
func TestWriteoutSpan(t *testing.T) {
	var w writeout
	if _, _, due := w.wrote(8<<20, 10<<20); due {
		t.Fatal("write-out due after 2 MiB")
	}
	if _, _, due := w.wrote(1<<20, 2<<20); due {
		t.Fatal("write-out due after 3 MiB")
	}
	lo, hi, due := w.wrote(4<<20, 5<<20)
	if !due || lo != 1<<20 || hi != 10<<20 {
		t.Fatalf("after 4 MiB: span [%d, %d), due %v; want [1 MiB, 10 MiB), due", lo, hi, due)
	}
	lo, hi, due = w.wrote(20<<20, 24<<20)
	if !due || lo != 20<<20 || hi != 24<<20 {
		t.Fatalf("next 4 MiB: span [%d, %d), due %v; want [20 MiB, 24 MiB), due", lo, hi, due)
	}
}
