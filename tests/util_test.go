package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stria/stria/api"
	"golang.org/x/sys/unix"
)

// randomData is n deterministic pseudo-random bytes.
func randomData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustWrite(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes differ from the %d expected, first difference at %d", what, len(got), len(want), i)
	}
}

func fileSHA(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// layoutOf reads a file's layout through the stria.layout xattr.
func layoutOf(t testing.TB, path string) api.Layout {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Getxattr(path, api.LayoutXattr, buf)
	if err != nil {
		t.Fatalf("getxattr %s: %v", api.LayoutXattr, err)
	}
	var l api.Layout
	if err := json.Unmarshal(buf[:n], &l); err != nil {
		t.Fatalf("layout %q: %v", buf[:n], err)
	}
	return l
}

// objectBytes sums the sizes of the object data files an OST holds.
func objectBytes(t testing.TB, ostDir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(filepath.Join(ostDir, "objects"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !strings.HasSuffix(path, ".crc") {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// objectFiles counts the object data files an OST holds (not the emptied
// files of destroyed objects it keeps in its pool for reuse).
func objectFiles(t testing.TB, ostDir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(ostDir, "objects"), func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && d.Name() == "pool":
			return filepath.SkipDir
		case d.Type().IsRegular() && !strings.HasSuffix(path, ".crc"):
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// dropPages has the kernel drop its cached pages of path, so the next read
// asks the file system.
func dropPages(t testing.TB, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// findObject returns the data file of one stripe object on an OST.
func findObject(t testing.TB, ostDir string, objID uint64) string {
	t.Helper()
	var found string
	want := strings.ToLower(strings.TrimLeft(hex16(objID), "0"))
	filepath.WalkDir(filepath.Join(ostDir, "objects"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasSuffix(path, ".crc") &&
			strings.TrimLeft(filepath.Base(path), "0") == want {
			found = path
		}
		return nil
	})
	if found == "" {
		t.Fatalf("object %d not found under %s", objID, ostDir)
	}
	return found
}

func hex16(v uint64) string {
	const digits = "0123456789abcdef"
	b := make([]byte, 16)
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&15]
		v >>= 4
	}
	return string(b)
}

// writeStrided has writer w of ws write, all at once, records w,
// w+len(ws), w+2*len(ws), … of rec bytes each (random, seeded by the
// record's number), records in all, and returns the bytes written.
func writeStrided(t *testing.T, ws []io.WriterAt, rec, records int) []byte {
	t.Helper()
	want := make([]byte, rec*records)
	var wg sync.WaitGroup
	errs := make(chan error, len(ws))
	for w, f := range ws {
		wg.Go(func() {
			for k := w; k < records; k += len(ws) {
				d := randomData(uint64(k), rec)
				copy(want[k*rec:], d) // writers own disjoint records
				if _, err := f.WriteAt(d, int64(k*rec)); err != nil {
					errs <- fmt.Errorf("writer %d, record %d: %w", w, k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return want
}
