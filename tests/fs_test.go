package tests

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stria/stria/api"
	"golang.org/x/sys/unix"
)

// TestStripedFileRoundTrip writes 256 MiB of random data with stripe count
// 4, reads it back bit-identical, and finds about a quarter on each OST.
func TestStripedFileRoundTrip(t *testing.T) {
	c := startUp(t, "", 4)
	path := c.path("big")
	setstripe(t, "-c", "4", "-S", "1M", path)
	const size = 256 << 20
	data := randomData(1, size)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < size; off += 1 << 20 {
		if _, err := f.Write(data[off : off+1<<20]); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Size() != size {
		t.Fatalf("stat: %v size %d", err, st.Size())
	}
	sameBytes(t, "256 MiB read back", mustRead(t, path), data)

	l := layoutOf(t, path)
	if l.StripeCount != 4 || len(l.Objects) != 4 || l.StripeSize != 1<<20 {
		t.Fatalf("layout %v, want 4 stripes of 1 MiB", l)
	}
	seen := map[uint32]bool{}
	for _, o := range l.Objects {
		seen[o.OST] = true
	}
	if len(seen) != 4 {
		t.Fatalf("stripes share OSTs: %v", l.Objects)
	}
	for i := 0; i < 4; i++ {
		got := objectBytes(t, filepath.Join(c.data, fmt.Sprintf("ost%d", i)))
		if got < size/4-(1<<20) || got > size/4+(1<<20) {
			t.Errorf("OST %d holds %d bytes, want about %d", i, got, size/4)
		}
	}
	out, err := stria(t, "getstripe", path)
	if err != nil || !strings.Contains(out, "lmm_stripe_count:  4") || !strings.Contains(out, "obdidx") {
		t.Fatalf("getstripe: %v\n%s", err, out)
	}
	// The layout is an xattr that getfattr shows.
	gf, err := exec.Command("getfattr", "-n", api.LayoutXattr, "--only-values", path).CombinedOutput()
	if err != nil || !strings.Contains(string(gf), `"stripe_count":4`) {
		t.Fatalf("getfattr: %v\n%s", err, gf)
	}
}

// TestPOSIX covers the single-client POSIX contract with named cases.
func TestPOSIX(t *testing.T) {
	c := startUp(t, "", 4)
	dirN := 0
	dir := func(t *testing.T) string {
		dirN++
		d := c.path(fmt.Sprintf("case%d", dirN))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	errnoIs := func(t *testing.T, what string, err error, want syscall.Errno) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("%s: got %v, want %v", what, err, want)
		}
	}

	t.Run("OExclAndTrunc", func(t *testing.T) {
		p := filepath.Join(dir(t), "f")
		mustWrite(t, p, []byte("0123456789"))
		_, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		errnoIs(t, "O_EXCL on existing", err, syscall.EEXIST)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if st, _ := os.Stat(p); st.Size() != 0 {
			t.Fatalf("size after O_TRUNC %d", st.Size())
		}
	})

	t.Run("Append", func(t *testing.T) {
		p := filepath.Join(dir(t), "log")
		for i := 0; i < 5; i++ {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(f, "line %d\n", i)
			f.Close()
		}
		want := "line 0\nline 1\nline 2\nline 3\nline 4\n"
		if got := string(mustRead(t, p)); got != want {
			t.Fatalf("append: %q", got)
		}
	})

	t.Run("SparseAcrossStripes", func(t *testing.T) {
		p := filepath.Join(dir(t), "sparse")
		setstripe(t, "-c", "4", "-S", "64K", p)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		tail := randomData(2, 100_000)
		const off = 10<<20 + 12345
		if _, err := f.WriteAt(tail, off); err != nil {
			t.Fatal(err)
		}
		head := randomData(3, 70_000) // spans stripe 0 into stripe 1
		if _, err := f.WriteAt(head, 30_000); err != nil {
			t.Fatal(err)
		}
		want := make([]byte, off+len(tail))
		copy(want[30_000:], head)
		copy(want[off:], tail)
		got := mustRead(t, p)
		sameBytes(t, "sparse file", got, want)
	})

	t.Run("OverwriteAnyOffset", func(t *testing.T) {
		p := filepath.Join(dir(t), "ow")
		setstripe(t, "-c", "3", "-S", "64K", p)
		want := randomData(4, 1<<20)
		mustWrite(t, p, want)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i, off := range []int{0, 1, 65535, 65536, 131071, 500_000, 1<<20 - 3} {
			patch := randomData(uint64(10+i), 4099)
			n := copy(want[off:], patch)
			if _, err := f.WriteAt(patch[:n], int64(off)); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		sameBytes(t, "overwritten", mustRead(t, p), want)
	})

	// The mount gathers small writes that continue one another into one
	// OST request while earlier ones are in flight: the IOR-hard shape (two
	// writers, unaligned records strided into one file), rewrites of bytes
	// still gathering, and small appends must all read back in order, both
	// at once through the open file and from the OSTs after close.
	t.Run("SmallWritesInOrder", func(t *testing.T) {
		p := filepath.Join(dir(t), "small")
		setstripe(t, "-c", "2", "-S", "64K", p)
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		const rec, records = 4701, 400
		want := writeStrided(t, []io.WriterAt{f, f}, rec, records)
		readAt := func(what string, off, n int) {
			t.Helper()
			got := make([]byte, n)
			if _, err := f.ReadAt(got, int64(off)); err != nil {
				t.Fatalf("%s: read %d bytes at %d: %v", what, n, off, err)
			}
			sameBytes(t, what, got, want[off:off+n])
		}
		for i, off := range []int{0, 3*rec - 7, 100*rec + 1, len(want) - 333} {
			patch := randomData(uint64(1000+i), 333)
			copy(want[off:], patch)
			if _, err := f.WriteAt(patch, int64(off)); err != nil {
				t.Fatal(err)
			}
			readAt("rewrite read back at once", max(off-100, 0), 433)
		}
		for i := range 300 {
			d := randomData(uint64(2000+i), 1+i*7%900)
			if _, err := f.WriteAt(d, int64(len(want))); err != nil {
				t.Fatal(err)
			}
			want = append(want, d...)
		}
		readAt("whole file before close", 0, len(want))
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "whole file after close", mustRead(t, p), want)
	})

	// A small write held pending keeps its own buffer until the next one
	// continues it past that buffer's size; then both move into a 1 MiB
	// one. Through a write-only handle (one WRITE per write), each run of
	// small writes follows a large write that is likely still on its way
	// to the OSTs (so the small ones are held pending, not sent at once):
	// they join, and everything reads back in order.
	t.Run("PendingWritesJoin", func(t *testing.T) {
		p := filepath.Join(dir(t), "joined")
		setstripe(t, "-c", "4", "-S", "1M", p)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		const mib, runs, small, perRun = 1 << 20, 40, 40000, 3
		const bigAt = 8 * mib // past the runs of small writes
		want := make([]byte, bigAt+runs*mib)
		write := func(d []byte, off int) {
			t.Helper()
			if _, err := f.WriteAt(d, int64(off)); err != nil {
				t.Fatalf("write %d bytes at %d: %v", len(d), off, err)
			}
			copy(want[off:], d)
		}
		for r := range runs {
			write(randomData(uint64(r), mib), bigAt+r*mib)
			for i := range perRun {
				k := r*perRun + i
				write(randomData(uint64(1000+k), small), k*small)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "large writes and joined small ones", mustRead(t, p), want)
	})

	t.Run("StridedReadsSeeWrites", func(t *testing.T) {
		// Every other record, as IOR's readers take them: the gateway
		// reads ahead of such a reader, and what it read must never hide
		// a later write or truncate through this mount.
		p := filepath.Join(dir(t), "strided")
		setstripe(t, "-c", "2", "-S", "64K", p)
		const rec, records = 47008, 120
		want := randomData(7, rec*records)
		mustWrite(t, p, want)
		r, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		w, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		got := make([]byte, rec)
		read := func(k int) {
			t.Helper()
			n, err := r.ReadAt(got, int64(k*rec))
			if err != nil && !(errors.Is(err, io.EOF) && k*rec+n == len(want)) {
				t.Fatalf("record %d: %d bytes, %v", k, n, err)
			}
			sameBytes(t, fmt.Sprintf("record %d", k), got[:n], want[k*rec:min((k+1)*rec, len(want))])
		}
		for k := 1; k <= 11; k += 2 {
			read(k) // the last ones come from read-ahead
		}
		// Rewrite records read ahead but not yet read.
		for k := 13; k < 40; k++ {
			d := randomData(uint64(100+k), rec)
			copy(want[k*rec:], d)
			if _, err := w.WriteAt(d, int64(k*rec)); err != nil {
				t.Fatal(err)
			}
		}
		for k := 13; k < 61; k += 2 {
			read(k)
		}
		// Cut the file inside records about to be read, then extend it
		// again: what was cut reads as zeros.
		if err := w.Truncate(int64(70*rec + 1000)); err != nil {
			t.Fatal(err)
		}
		if n, err := r.ReadAt(got, int64(71*rec)); n != 0 || !errors.Is(err, io.EOF) {
			t.Fatalf("record past the new end: %d bytes, %v", n, err)
		}
		if err := w.Truncate(int64(90 * rec)); err != nil {
			t.Fatal(err)
		}
		want = append(want[:70*rec+1000], make([]byte, 20*rec-1000)...)
		for k := 61; k < 90; k += 2 {
			read(k)
		}
	})

	t.Run("WriteOnlyHandles", func(t *testing.T) {
		// A write-only handle writes around the kernel's page cache
		// (FOPEN_DIRECT_IO). Strided writers of one file through their own
		// write-only handles (IOR-hard), whose writes run in parallel.
		p := filepath.Join(dir(t), "shared")
		setstripe(t, "-c", "4", "-S", "64K", p)
		const rec, records = 47008, 96
		var writers []*os.File
		for range 2 {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			writers = append(writers, f)
		}
		want := writeStrided(t, []io.WriterAt{writers[0], writers[1]}, rec, records)
		for _, f := range writers {
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
		sameBytes(t, "strided records", mustRead(t, p), want)

		// Pages that a reading handle and a mapping of the file hold are
		// dropped by every write through a write-only handle: each write is
		// read back at once through both.
		r, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		m, err := unix.Mmap(int(r.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(m)
		if _, err := io.ReadFull(r, make([]byte, len(want))); err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "mapped before the writes", m, want)
		wo, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer wo.Close()
		// Meanwhile another reader keeps touching the same pages through
		// the mapping (faults, which unlike read(2) do not check the
		// mtime), so that pages come back into the cache while the writes
		// are on their way.
		stop := make(chan struct{})
		var readers sync.WaitGroup
		readers.Go(func() {
			var sum byte
			for {
				select {
				case <-stop:
					return
				default:
				}
				for o := 10 * rec; o < 13*rec; o += 4096 {
					sum += m[o]
				}
			}
		})
		defer func() { close(stop); readers.Wait() }()
		got := make([]byte, 3*rec)
		for i := range 200 {
			off := 10*rec + i*313%rec
			d := randomData(uint64(5000+i), 2*rec-i)
			copy(want[off:], d)
			if _, err := wo.WriteAt(d, int64(off)); err != nil {
				t.Fatal(err)
			}
			// The mapping first: a read(2) would have the kernel check the
			// file's mtime, and drop all its pages when it moved.
			sameBytes(t, fmt.Sprintf("mapping after write %d", i), m[10*rec:13*rec], want[10*rec:13*rec])
			if _, err := r.ReadAt(got, 10*rec); err != nil {
				t.Fatal(err)
			}
			sameBytes(t, fmt.Sprintf("read after write %d", i), got, want[10*rec:13*rec])
		}
	})

	t.Run("TruncateAcrossStripes", func(t *testing.T) {
		p := filepath.Join(dir(t), "tr")
		setstripe(t, "-c", "4", "-S", "64K", p)
		data := randomData(5, 600_000)
		mustWrite(t, p, data)
		for _, size := range []int64{300_001, 65536, 65535, 1, 0} {
			if err := os.Truncate(p, size); err != nil {
				t.Fatal(err)
			}
			sameBytes(t, fmt.Sprintf("after truncate to %d", size), mustRead(t, p), data[:size])
		}
		mustWrite(t, p, data)
		if err := os.Truncate(p, 100_000); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 600_000); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte{}, data[:100_000]...), make([]byte, 500_000)...)
		sameBytes(t, "cut then extended: the cut part reads as zeros", mustRead(t, p), want)
	})

	t.Run("DataOnMDT", func(t *testing.T) {
		// A directory set to keep each file's first 64 KiB on meta: a
		// small file there has no OST object at all.
		d := dir(t)
		setstripe(t, "-c", "1", "--dom", "64K", d)
		objects := func() int {
			n := 0
			for i := 0; i < c.osts; i++ {
				n += objectFiles(t, filepath.Join(c.data, fmt.Sprintf("ost%d", i)))
			}
			return n
		}
		before := objects()
		small := filepath.Join(d, "small")
		data := randomData(60, 5000)
		mustWrite(t, small, data)
		if l := layoutOf(t, small); l.DoMSize != 64<<10 {
			t.Fatalf("layout %v: want its directory's 64 KiB on meta", l)
		}
		if out, err := stria(t, "getstripe", small); err != nil || !strings.Contains(out, "dom_size:          65536") {
			t.Fatalf("getstripe: %v\n%s", err, out)
		}
		dropPages(t, small)
		sameBytes(t, "small file", mustRead(t, small), data)
		// Rewriting it whole (O_TRUNC) makes no object either.
		data = randomData(61, 3000)
		mustWrite(t, small, data)
		sameBytes(t, "rewritten small file", mustRead(t, small), data)
		if n := objects(); n != before {
			t.Fatalf("OSTs hold %d object files after writing a 5,000-byte file, want %d", n, before)
		}

		// A file across the region's end: meta's part and the OST's part
		// read back alone and together.
		big := filepath.Join(d, "big")
		data = randomData(62, 200_000)
		mustWrite(t, big, data)
		if n := objects(); n != before+1 {
			t.Fatalf("OSTs hold %d object files after a 200,000-byte file, want %d", n, before+1)
		}
		dropPages(t, big)
		f, err := os.Open(big)
		if err != nil {
			t.Fatal(err)
		}
		across := make([]byte, 10_000)
		if _, err := f.ReadAt(across, 60_000); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sameBytes(t, "read across the region's end", across, data[60_000:70_000])
		sameBytes(t, "file across the region's end", mustRead(t, big), data)
		// Cut into the region, then grown past it: zeros, not old bytes.
		if err := os.Truncate(big, 100); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(big, 150_000); err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte{}, data[:100]...), make([]byte, 149_900)...)
		sameBytes(t, "cut into the region, then grown", mustRead(t, big), want)

		// Another region size per directory, as lfs setstripe -E N -L mdt.
		d2 := dir(t)
		setstripe(t, "-c", "2", "--dom", "128K", d2)
		p := filepath.Join(d2, "f")
		data = randomData(63, 150_000)
		mustWrite(t, p, data)
		if l := layoutOf(t, p); l.DoMSize != 128<<10 || l.StripeCount != 2 {
			t.Fatalf("layout %v: want 128 KiB on meta and 2 stripes", l)
		}
		dropPages(t, p)
		sameBytes(t, "file in a 128K region directory", mustRead(t, p), data)

		// A region file's stripe objects are made on first use past the
		// region (meta hears of it first, a layout intent): by a write as
		// above, a truncate that extends the file there, or fallocate.
		// Whatever was made goes with the files.
		extended := filepath.Join(d, "extended")
		mustWrite(t, extended, nil)
		if err := os.Truncate(extended, 3<<20); err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "file extended past the region", mustRead(t, extended), make([]byte, 3<<20))
		allocated := filepath.Join(d, "allocated")
		af, err := os.Create(allocated)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Fallocate(int(af.Fd()), 0, 0, 2<<20); err != nil {
			t.Fatal(err)
		}
		af.Close()
		// One object each: big's, f's first stripe (its second was
		// never written, so no OST made it), extended's, allocated's.
		if n := objects(); n != before+4 {
			t.Fatalf("OSTs hold %d object files with four files past their regions, want %d", n, before+4)
		}
		for _, f := range []string{small, big, p, extended, allocated} {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 30*time.Second, "the removed files' objects to be destroyed", func() bool { return objects() == before })
	})

	t.Run("Mmap", func(t *testing.T) {
		p := filepath.Join(dir(t), "mm")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(3 << 20); err != nil {
			t.Fatal(err)
		}
		m, err := unix.Mmap(int(f.Fd()), 0, 3<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		pattern := randomData(6, 3<<20)
		copy(m, pattern)
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			t.Fatal(err)
		}
		if err := unix.Munmap(m); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 3<<20)
		// Read through a fresh descriptor, from the OSTs.
		g, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if _, err := g.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "mmap-written data", got, pattern)
		r, err := unix.Mmap(int(g.Fd()), 0, 3<<20, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(r)
		sameBytes(t, "mmap read", r, pattern)
	})

	t.Run("FsyncFdatasync", func(t *testing.T) {
		p := filepath.Join(dir(t), "sync")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Write([]byte("durable"))
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Rename", func(t *testing.T) {
		d := dir(t)
		a, b := filepath.Join(d, "a"), filepath.Join(d, "b")
		os.MkdirAll(filepath.Join(a, "sub", "deeper"), 0o755)
		os.Mkdir(b, 0o755)
		mustWrite(t, filepath.Join(a, "f"), []byte("one"))
		mustWrite(t, filepath.Join(b, "g"), []byte("two"))
		if err := os.Rename(filepath.Join(a, "f"), filepath.Join(b, "g")); err != nil {
			t.Fatal(err)
		}
		if got := string(mustRead(t, filepath.Join(b, "g"))); got != "one" {
			t.Fatalf("replaced target holds %q", got)
		}
		if _, err := os.Stat(filepath.Join(a, "f")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("source still there: %v", err)
		}
		err := os.Rename(a, filepath.Join(a, "sub", "deeper", "a"))
		errnoIs(t, "directory into its own subtree", err, syscall.EINVAL)
		if err := os.Rename(filepath.Join(a, "sub"), filepath.Join(b, "sub")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(b, "sub", "deeper")); err != nil {
			t.Fatal(err)
		}
		os.Mkdir(filepath.Join(d, "full"), 0o755)
		mustWrite(t, filepath.Join(d, "full", "x"), nil)
		// syscall.Rename: os.Rename refuses any existing directory target
		// itself, before the file system is asked.
		errnoIs(t, "dir over non-empty dir", syscall.Rename(filepath.Join(b, "sub"), filepath.Join(d, "full")), syscall.ENOTEMPTY)
		errnoIs(t, "file over dir", syscall.Rename(filepath.Join(b, "g"), filepath.Join(d, "full")), syscall.EISDIR)
		errnoIs(t, "dir over file", syscall.Rename(filepath.Join(b, "sub"), filepath.Join(d, "full", "x")), syscall.ENOTDIR)
		os.Mkdir(filepath.Join(d, "empty"), 0o755)
		if err := syscall.Rename(filepath.Join(b, "sub"), filepath.Join(d, "empty")); err != nil {
			t.Fatalf("dir over empty dir: %v", err)
		}
		if _, err := os.Stat(filepath.Join(d, "empty", "deeper")); err != nil {
			t.Fatalf("replaced dir lost its contents: %v", err)
		}
	})

	t.Run("LinksAndSymlinks", func(t *testing.T) {
		d := dir(t)
		p := filepath.Join(d, "orig")
		mustWrite(t, p, []byte("shared"))
		if err := os.Link(p, filepath.Join(d, "hard")); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(p)
		if n := st.Sys().(*syscall.Stat_t).Nlink; n != 2 {
			t.Fatalf("nlink %d, want 2", n)
		}
		if err := os.Symlink("orig", filepath.Join(d, "sym")); err != nil {
			t.Fatal(err)
		}
		if target, err := os.Readlink(filepath.Join(d, "sym")); err != nil || target != "orig" {
			t.Fatalf("readlink %q %v", target, err)
		}
		if got := string(mustRead(t, filepath.Join(d, "sym"))); got != "shared" {
			t.Fatalf("through symlink: %q", got)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if got := string(mustRead(t, filepath.Join(d, "hard"))); got != "shared" {
			t.Fatalf("hard link after unlink: %q", got)
		}
		errnoIs(t, "link to a directory", os.Link(d, filepath.Join(d, "dirlink")), syscall.EPERM)
	})

	t.Run("MkdirRmdir", func(t *testing.T) {
		d := dir(t)
		sub := filepath.Join(d, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		errnoIs(t, "mkdir existing", os.Mkdir(sub, 0o755), syscall.EEXIST)
		mustWrite(t, filepath.Join(sub, "f"), nil)
		errnoIs(t, "rmdir non-empty", syscall.Rmdir(sub), syscall.ENOTEMPTY)
		errnoIs(t, "rmdir a file", syscall.Rmdir(filepath.Join(sub, "f")), syscall.ENOTDIR)
		errnoIs(t, "unlink a dir", syscall.Unlink(sub), syscall.EISDIR)
		os.Remove(filepath.Join(sub, "f"))
		if err := syscall.Rmdir(sub); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(d)
		if n := st.Sys().(*syscall.Stat_t).Nlink; n != 2 {
			t.Fatalf("parent nlink %d after rmdir, want 2", n)
		}
	})

	t.Run("ChmodChownUtimens", func(t *testing.T) {
		p := filepath.Join(dir(t), "attrs")
		mustWrite(t, p, nil)
		if err := os.Chmod(p, 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 1234, 5678); err != nil {
			t.Fatal(err)
		}
		when := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode().Perm() != 0o640 || sys.Uid != 1234 || sys.Gid != 5678 || !st.ModTime().Equal(when) {
			t.Fatalf("got mode %v uid %d gid %d mtime %v", st.Mode(), sys.Uid, sys.Gid, st.ModTime())
		}
	})

	t.Run("MtimeSetBeforeCloseStays", func(t *testing.T) {
		// cp -p sets the times on the descriptor before closing it.
		p := filepath.Join(dir(t), "copied")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(randomData(11, 300_000)); err != nil {
			t.Fatal(err)
		}
		old := time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC)
		if err := unix.Futimes(int(f.Fd()), []unix.Timeval{unix.NsecToTimeval(old.UnixNano()), unix.NsecToTimeval(old.UnixNano())}); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// Forget the kernel's cached attributes: ask meta.
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !st.ModTime().Equal(old) || st.Size() != 300_000 {
			t.Fatalf("mtime %v size %d, want %v and 300000", st.ModTime(), st.Size(), old)
		}
	})

	t.Run("Xattrs", func(t *testing.T) {
		p := filepath.Join(dir(t), "x")
		mustWrite(t, p, nil)
		if err := unix.Setxattr(p, "user.a", []byte("alpha"), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "user.b", []byte("beta"), 0); err != nil {
			t.Fatal(err)
		}
		errnoIs(t, "XATTR_CREATE on existing", unix.Setxattr(p, "user.a", []byte("x"), unix.XATTR_CREATE), syscall.EEXIST)
		errnoIs(t, "XATTR_REPLACE on absent", unix.Setxattr(p, "user.c", []byte("x"), unix.XATTR_REPLACE), syscall.ENODATA)
		buf := make([]byte, 256)
		n, err := unix.Getxattr(p, "user.a", buf)
		if err != nil || string(buf[:n]) != "alpha" {
			t.Fatalf("getxattr %q %v", buf[:n], err)
		}
		n, err = unix.Listxattr(p, buf)
		if err != nil {
			t.Fatal(err)
		}
		names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
		sort.Strings(names)
		if strings.Join(names, ",") != "user.a,user.b" {
			t.Fatalf("listxattr %q", names)
		}
		if err := unix.Removexattr(p, "user.a"); err != nil {
			t.Fatal(err)
		}
		_, err = unix.Getxattr(p, "user.a", buf)
		errnoIs(t, "getxattr removed", err, syscall.ENODATA)
		_, err = unix.Getxattr(p, "user.b", make([]byte, 2))
		errnoIs(t, "getxattr small buffer", err, syscall.ERANGE)
	})

	t.Run("WriteRemovesFileCapabilities", func(t *testing.T) {
		// The kernel asks for security.capability before every write and
		// removes it if present; the mount answers that question from
		// what it knows, which must not hide a capability set since.
		p := filepath.Join(dir(t), "capfile")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write([]byte("before")); err != nil {
			t.Fatal(err)
		}
		// A version 2 capability set: cap_net_raw permitted.
		caps := make([]byte, 20)
		binary.LittleEndian.PutUint32(caps[0:], 0x02000000)
		binary.LittleEndian.PutUint32(caps[4:], 1<<13)
		if err := unix.Setxattr(p, "security.capability", caps, 0); err != nil {
			t.Fatalf("setting a file capability: %v", err)
		}
		buf := make([]byte, 64)
		if n, err := unix.Getxattr(p, "security.capability", buf); err != nil || n != len(caps) {
			t.Fatalf("capability not set: %d %v", n, err)
		}
		if _, err := f.Write([]byte("after")); err != nil {
			t.Fatal(err)
		}
		_, err = unix.Getxattr(p, "security.capability", buf)
		errnoIs(t, "capability after a write", err, syscall.ENODATA)
	})

	t.Run("Statfs", func(t *testing.T) {
		var st unix.Statfs_t
		if err := unix.Statfs(c.mnt, &st); err != nil {
			t.Fatal(err)
		}
		var host unix.Statfs_t
		if err := unix.Statfs(c.data, &host); err != nil {
			t.Fatal(err)
		}
		// Four OSTs on the same disk: the total is four times the disk.
		got, want := uint64(st.Blocks)*uint64(st.Bsize), 4*host.Blocks*uint64(host.Bsize)
		if got < want*99/100 || got > want*101/100 {
			t.Fatalf("statfs total %d, want about %d (4 OSTs)", got, want)
		}
		if st.Files == 0 || st.Ffree == 0 || st.Namelen != 255 {
			t.Fatalf("statfs files %d free %d namelen %d", st.Files, st.Ffree, st.Namelen)
		}
		out, err := stria(t, "df", "-h", c.mnt)
		if err != nil || !strings.Contains(out, "OST0003") || !strings.Contains(out, "MDT0000") {
			t.Fatalf("stria df: %v\n%s", err, out)
		}
	})

	t.Run("BadNames", func(t *testing.T) {
		d := dir(t)
		long := strings.Repeat("n", 256)
		_, err := os.Create(filepath.Join(d, long))
		errnoIs(t, "256-byte name", err, syscall.ENAMETOOLONG)
		errnoIs(t, "mkdir 256-byte name", os.Mkdir(filepath.Join(d, long), 0o755), syscall.ENAMETOOLONG)
		ok := strings.Repeat("n", 255)
		if f, err := os.Create(filepath.Join(d, ok)); err != nil {
			t.Fatalf("255-byte name: %v", err)
		} else {
			f.Close()
		}
		_, err = os.Create(filepath.Join(d, "missing", "f"))
		errnoIs(t, "missing parent", err, syscall.ENOENT)
		_, err = os.Create(filepath.Join(d, "bad\xffname"))
		errnoIs(t, "name that is not UTF-8", err, syscall.EINVAL)
		_, err = os.Stat(filepath.Join(d, "nothing"))
		errnoIs(t, "stat missing", err, syscall.ENOENT)
	})

	t.Run("PermissionsForNonRoot", func(t *testing.T) {
		d := dir(t) // 0755, owned by root
		open := filepath.Join(d, "open")
		os.Mkdir(open, 0o777)
		os.Chmod(open, 0o777)
		private := filepath.Join(d, "private")
		mustWrite(t, private, []byte("secret"))
		os.Chmod(private, 0o600)
		asNobody := func(script string) error {
			cmd := exec.Command("sh", "-c", script)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		}
		if err := asNobody("echo x > " + filepath.Join(d, "denied")); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Fatalf("creating in a root 0755 dir as nobody: %v", err)
		}
		if err := asNobody("cat " + private); err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Fatalf("reading a 0600 root file as nobody: %v", err)
		}
		if err := asNobody("echo x > " + filepath.Join(open, "mine")); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(open, "mine"))
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 65534 || sys.Gid != 65534 {
			t.Fatalf("new file owned by %d:%d, want 65534:65534", sys.Uid, sys.Gid)
		}
		if err := asNobody("chmod 777 " + private); err == nil {
			t.Fatal("nobody could chmod root's file")
		}
	})

	t.Run("ChangesClearSetIDBits", func(t *testing.T) {
		// As on a local file system: writing, truncating or allocating
		// as a caller without CAP_FSETID, or any chown, clears set-user-ID,
		// and set-group-ID where the group may execute. Reading does not,
		// nor does root's own write.
		d := dir(t)
		cases := []struct {
			name   string
			mode   uint32
			nobody string               // shell command run as nobody; %s is the file
			root   func(p string) error // or done as root
			want   uint32
		}{
			{name: "nobody appends", mode: 0o6777, nobody: "printf x >> %s", want: 0o777},
			{name: "nobody appends, set-group-ID without group execute", mode: 0o2767, nobody: "printf x >> %s", want: 0o2767},
			{name: "nobody truncates", mode: 0o6777, nobody: ": > %s", want: 0o777},
			{name: "nobody allocates", mode: 0o6777, nobody: "fallocate -l 1M %s", want: 0o777},
			{name: "nobody reads", mode: 0o6777, nobody: "cat %s > /dev/null", want: 0o6777},
			{name: "root appends", mode: 0o6777, root: func(p string) error {
				f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					return err
				}
				if _, err := f.Write([]byte("x")); err != nil {
					f.Close()
					return err
				}
				return f.Close()
			}, want: 0o6777},
			{name: "root chowns", mode: 0o6777, root: func(p string) error { return os.Chown(p, 65534, -1) }, want: 0o777},
		}
		for i, c := range cases {
			p := filepath.Join(d, fmt.Sprintf("f%d", i))
			mustWrite(t, p, []byte("0123456789"))
			if err := syscall.Chmod(p, c.mode); err != nil {
				t.Fatal(err)
			}
			var err error
			if c.root != nil {
				err = c.root(p)
			} else {
				cmd := exec.Command("sh", "-c", fmt.Sprintf(c.nobody, p))
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
				if out, cerr := cmd.CombinedOutput(); cerr != nil {
					err = fmt.Errorf("%v: %s", cerr, out)
				}
			}
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			if got := st.Mode & 0o7777; got != c.want {
				t.Errorf("%s: mode %#o, want %#o", c.name, got, c.want)
			}
		}
	})

	t.Run("DirectoryDefaultLayout", func(t *testing.T) {
		d := dir(t)
		setstripe(t, "-c", "2", "-S", "128K", d)
		sub := filepath.Join(d, "inherits")
		os.Mkdir(sub, 0o755)
		p := filepath.Join(sub, "f")
		mustWrite(t, p, randomData(7, 300_000))
		l := layoutOf(t, p)
		if l.StripeCount != 2 || l.StripeSize != 128<<10 {
			t.Fatalf("inherited layout %v, want 2 x 128K", l)
		}
		out, err := stria(t, "getstripe", d)
		if err != nil || !strings.Contains(out, "stripe_count:  2") {
			t.Fatalf("getstripe dir: %v\n%s", err, out)
		}
		all := filepath.Join(d, "all")
		setstripe(t, "-c", "-1", all)
		if l := layoutOf(t, all); len(l.Objects) != 4 {
			t.Fatalf("-c -1 gave %d stripes, want 4", len(l.Objects))
		}
	})

	t.Run("BadLayoutsChangeNothing", func(t *testing.T) {
		d := dir(t)
		cases := []struct {
			name string
			args []string
		}{
			{"more stripes than OSTs", []string{"-c", "5"}},
			{"size not a multiple of 64K", []string{"-S", "100K"}},
			{"zero count", []string{"-c", "0"}},
			{"bad size", []string{"-S", "lots"}},
			{"data-on-MDT size not a multiple of 64K", []string{"--dom", "100K"}},
			{"data-on-MDT size over 1M", []string{"--dom", "2M"}},
		}
		for _, tc := range cases {
			p := filepath.Join(d, "new")
			out, err := stria(t, append(append([]string{"setstripe"}, tc.args...), p)...)
			if err == nil {
				t.Errorf("%s: setstripe succeeded:\n%s", tc.name, out)
			}
			if strings.TrimSpace(out) == "" {
				t.Errorf("%s: no error message", tc.name)
			}
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: left %s behind (%v)", tc.name, p, err)
			}
			if _, err := stria(t, append(append([]string{"setstripe"}, tc.args...), d)...); err == nil {
				t.Errorf("%s: accepted on a directory", tc.name)
			}
		}
		out, _ := stria(t, "getstripe", d)
		if !strings.Contains(out, "filesystem default") {
			t.Fatalf("directory layout changed:\n%s", out)
		}
		p := filepath.Join(d, "hasdata")
		mustWrite(t, p, []byte("data"))
		if out, err := stria(t, "setstripe", "-c", "2", p); err == nil {
			t.Fatalf("setstripe on a file with data succeeded:\n%s", out)
		}
	})

	t.Run("BenchCommand", func(t *testing.T) {
		d := dir(t)
		out, err := stria(t, "bench", "--big-file-size", "8M", "--small-files", "20", "--small-file-size", "4K", "--threads", "2", "--json", d)
		if err != nil {
			t.Fatalf("stria bench: %v\n%s", err, out)
		}
		var report struct {
			Results []struct {
				Item  string  `json:"item"`
				Value float64 `json:"value"`
			} `json:"results"`
		}
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &report); err != nil {
			t.Fatalf("bench JSON: %v\n%s", err, out)
		}
		want := []string{"Write big file", "Read big file", "Write small file", "Read small file", "Stat file"}
		if len(report.Results) != len(want) {
			t.Fatalf("bench results %+v", report.Results)
		}
		for i, r := range report.Results {
			if r.Item != want[i] || !(r.Value > 0) {
				t.Fatalf("result %d: %+v, want %s with a positive value", i, r, want[i])
			}
		}
		if left, _ := os.ReadDir(d); len(left) != 0 {
			t.Fatalf("bench left %d entries behind", len(left))
		}
		if out, err := stria(t, "bench", "--threads", "0", d); err == nil {
			t.Fatalf("--threads 0 accepted:\n%s", out)
		}
	})

	t.Run("UnlinkWhileOpen", func(t *testing.T) {
		p := filepath.Join(dir(t), "ghost")
		want := randomData(8, 200_000)
		mustWrite(t, p, want)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatalf("reading an unlinked open file: %v", err)
		}
		sameBytes(t, "unlinked open file", got, want)
	})
}

// TestLargeDirectory lists a directory of 100,000 entries, paged.
func TestLargeDirectory(t *testing.T) {
	c := startUp(t, "", 2)
	d := c.path("big")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	const n, workers = 100_000, 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				if err := syscall.Mknod(filepath.Join(d, fmt.Sprintf("f%06d", i)), syscall.S_IFREG|0o644, 0); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(d)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Fatalf("readdir gave %d entries, want %d", len(entries), n)
	}
	for i, e := range entries {
		if want := fmt.Sprintf("f%06d", i); e.Name() != want {
			t.Fatalf("entry %d is %q, want %q", i, e.Name(), want)
		}
	}
	// ls -l style: readdirplus with attributes.
	out, err := exec.Command("ls", "-l", d).Output()
	if err != nil {
		t.Fatal(err)
	}
	if lines := bytes.Count(out, []byte("\n")); lines != n+1 {
		t.Fatalf("ls -l printed %d lines, want %d", lines, n+1)
	}
}
