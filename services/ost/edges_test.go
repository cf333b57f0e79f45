package ost

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/stria/stria/api"
	"github.com/stria/stria/api/iobuf"
)

// TestPatchCRC: patching a block's checksum for zeros that became p gives
// the checksum of the merged block, wherever p lands, for either block size.
func TestPatchCRC(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bs := range []int{sidecarBlockSize, inlineBlockSize} {
		cases := [][2]int{{0, 0}, {0, 1}, {0, bs}, {bs - 1, 1}, {100, min(47008, bs-100)}, {bs / 2, bs / 2}}
		for range 200 {
			lo := rng.IntN(bs)
			cases = append(cases, [2]int{lo, rng.IntN(bs - lo + 1)})
		}
		for _, c := range cases {
			lo, n := c[0], c[1]
			block := make([]byte, bs)
			for i := range block {
				if i < lo || i >= lo+n {
					block[i] = byte(rng.Uint32())
				}
			}
			before := blockCRC(block, int64(bs))
			p := pattern(lo, n)
			copy(block[lo:], p)
			if got, want := patchCRC(before, int64(bs), lo, p), blockCRC(block, int64(bs)); got != want {
				t.Fatalf("%d-byte block: patch of %d bytes at %d: %08x, want %08x", bs, n, lo, got, want)
			}
		}
		if zeroBlockCRC(int64(bs)) != blockCRC(make([]byte, bs), int64(bs)) {
			t.Fatalf("zeroBlockCRC(%d) is not the checksum of a block of zeros", bs)
		}
	}
}

// TestEdgeBlockZeros: writes split the known zero ranges, and only a write
// wholly inside one is covered.
func TestEdgeBlockZeros(t *testing.T) {
	e := edgeBlock{zeros: [maxZeroRuns][2]int32{{0, inlineBlockSize}}, runs: 1}
	e.written(1000, 2000)
	e.written(5000, 6000)
	want := [][2]int32{{0, 1000}, {2000, 5000}, {6000, inlineBlockSize}}
	if e.runs != len(want) {
		t.Fatalf("%d ranges, want %v", e.runs, want)
	}
	for i, w := range want {
		if e.zeros[i] != w {
			t.Fatalf("range %d is %v, want %v", i, e.zeros[i], w)
		}
	}
	for _, c := range []struct {
		lo, hi int32
		want   bool
	}{
		{0, 1000, true}, {2000, 5000, true}, {2500, 2600, true}, {6000, inlineBlockSize, true},
		{999, 1001, false}, {1500, 1600, false}, {4000, 6000, false}, {0, inlineBlockSize, false},
	} {
		if got := e.covers(c.lo, c.hi); got != c.want {
			t.Errorf("covers(%d, %d) = %v, want %v", c.lo, c.hi, got, c.want)
		}
	}
	// More ranges than are kept: the smallest go, the largest stay known.
	for i := int32(0); i < 8; i++ {
		e.written(10000+i*1000, 10000+i*1000+10)
	}
	if e.runs != maxZeroRuns {
		t.Fatalf("%d ranges kept, want %d", e.runs, maxZeroRuns)
	}
	if !e.covers(17100, inlineBlockSize) || !e.covers(2000, 5000) {
		t.Fatalf("largest ranges forgotten: %v", e.zeros[:e.runs])
	}
	if e.covers(1000, 1001) || e.covers(10005, 10006) {
		t.Fatalf("written bytes counted as zeros: %v", e.zeros[:e.runs])
	}

	// A slot that no longer holds the remembered checksum is not trusted.
	var m edgeMemory
	m.remember(3, edgeBlock{crc: 0x1234, zeros: [maxZeroRuns][2]int32{{100, 200}}, runs: 1})
	var slot [slotSize]byte
	putSlot(slot[:], 0x1234)
	// (A remembered block never looks at the data file: none is given.)
	if _, ok := m.lookup(3, sidecarBlockSize, 120, 180, slot[:], nil); !ok {
		t.Fatal("remembered block not found")
	}
	putSlot(slot[:], 0x1235)
	if _, ok := m.lookup(3, sidecarBlockSize, 120, 180, slot[:], nil); ok {
		t.Fatal("block used though its slot holds another checksum")
	}
	if _, ok := m.lookup(3, sidecarBlockSize, 120, 180, make([]byte, slotSize), nil); ok {
		t.Fatal("block used though its slot is a hole")
	}
}

// TestStridedRecordsPatched writes IOR-hard's 47,008-byte records into one
// object with gaps, then fills the gaps: the writes that fill them read
// nothing back, and every byte reads back verified.
func TestStridedRecordsPatched(t *testing.T) {
	st, err := openStore(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ctx := t.Context()
	const rec, records = 47008, 120
	write := func(obj uint64, m *model, k int) {
		d := pattern(k, rec)
		if _, err := st.write(ctx, obj, int64(k)*rec, d, false); err != nil {
			t.Fatalf("record %d: %v", k, err)
		}
		m.write(int64(k)*rec, d)
	}
	verify := func(obj uint64, m *model) {
		t.Helper()
		res, err := st.read(ctx, obj, 0, len(m.b), nil, false)
		if err != nil {
			t.Fatalf("read back: %v", err)
		}
		if !bytes.Equal(res.payload, m.b) {
			t.Fatalf("read back %d bytes, first difference at %d", len(res.payload), firstDiff(res.payload, m.b))
		}
		if res.buf != nil {
			iobuf.Put(res.buf)
		}
	}

	// Every other record ascending (one writer ahead), then the others
	// descending (the other writer, behind).
	var m model
	for k := 0; k < records; k += 2 {
		write(1, &m, k)
	}
	reads := st.edgeReads.Load()
	for k := records - 1; k > 0; k -= 2 {
		write(1, &m, k)
	}
	if n := st.edgeReads.Load() - reads; n != 0 {
		t.Errorf("filling the gaps read %d blocks back, want none", n)
	}
	verify(1, &m)

	// Every third record, then the two between each: the gaps hold whole
	// blocks that were holes past the end when the file grew over them.
	m = model{}
	for k := 0; k < records; k += 3 {
		write(3, &m, k)
	}
	reads = st.edgeReads.Load()
	for k := 0; k < records; k++ {
		if k%3 != 0 {
			write(3, &m, k)
		}
	}
	if n := st.edgeReads.Load() - reads; n != 0 {
		t.Errorf("filling two-record gaps read %d blocks back, want none", n)
	}
	verify(3, &m)

	// One record written far ahead (write-behind from another client
	// reaches the OST out of order), then those before it, in order.
	m = model{}
	write(4, &m, 60)
	reads = st.edgeReads.Load()
	for k := 0; k < 60; k++ {
		write(4, &m, k)
	}
	if n := st.edgeReads.Load() - reads; n != 0 {
		t.Errorf("filling 60 records behind one written ahead read %d blocks back, want none", n)
	}
	verify(4, &m)

	// One record written far ahead, more than any window remembered
	// (another mount's write-behind runs tens of MiB ahead), then records
	// near the start, out of order: their blocks were never remembered,
	// and their slots are holes.
	m = model{}
	write(5, &m, 800) // ~37 MiB in
	reads = st.edgeReads.Load()
	for _, k := range []int{7, 3, 5, 0, 2, 6, 1, 4} {
		write(5, &m, k)
	}
	if n := st.edgeReads.Load() - reads; n != 0 {
		t.Errorf("records far behind the end, out of order, read %d blocks back, want none", n)
	}
	verify(5, &m)

	// Shuffled records, then overwrites of some at odd offsets (these
	// read and verify), then a truncation into the middle and regrowth.
	m = model{}
	order := rand.New(rand.NewPCG(3, 4)).Perm(records)
	for _, k := range order {
		write(2, &m, k)
	}
	verify(2, &m)
	for k := 5; k < records; k += 17 {
		d := pattern(1000+k, 3000)
		off := int64(k)*rec + 777
		if _, err := st.write(ctx, 2, off, d, false); err != nil {
			t.Fatal(err)
		}
		m.write(off, d)
	}
	verify(2, &m)
	cut := int64(records/2)*rec + 12345
	if err := st.punch(ctx, 2, cut); err != nil {
		t.Fatal(err)
	}
	m.punch(cut)
	for k := records / 2; k < records; k++ {
		write(2, &m, k)
	}
	verify(2, &m)
}

// TestPatchedBlockChangedBehind: a block remembered after a partial write,
// then changed on disk by something else, is read and verified again at
// the next write, so a write into a damaged block is still refused.
func TestPatchedBlockChangedBehind(t *testing.T) {
	dir := t.TempDir()
	st, err := openStore(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	ctx := t.Context()
	const obj = 0x91
	if _, err := st.write(ctx, obj, 0, pattern(1, 1000), false); err != nil {
		t.Fatal(err)
	}
	// Without a change behind its back the next write patches.
	reads := st.edgeReads.Load()
	if _, err := st.write(ctx, obj, 1000, pattern(2, 1000), false); err != nil {
		t.Fatal(err)
	}
	if st.edgeReads.Load() != reads {
		t.Fatal("a write into known zeros read its block back")
	}
	flipBit(t, st.dataPath(obj), 500)
	_, err = st.write(ctx, obj, 3000, pattern(3, 100), false)
	if api.CodeOf(err) != api.CodeCorrupt {
		t.Fatalf("write into a block damaged on disk: %v, want corrupt", err)
	}
	if _, err := st.read(ctx, obj, 0, 10, nil, false); api.CodeOf(err) != api.CodeCorrupt {
		t.Fatalf("read of the damaged block: %v, want corrupt", err)
	}
}
