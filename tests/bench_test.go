package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stria/stria/tests/loopfs"
)

// BenchmarkVsLoopback measures Stria and, in the same run and on the same
// disk, a go-fuse loopback mount with the same mount options (passthrough
// off): the reference any go-fuse file system is measured against. Run it
// with scripts/bench.sh.
func BenchmarkVsLoopback(b *testing.B) {
	needFUSE(b)
	base := os.Getenv("STRIA_BENCH_DIR")
	if base == "" {
		base = b.TempDir()
	}
	base, err := os.MkdirTemp(base, "run-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(base) })

	c := startUp(b, filepath.Join(base, "stria"), 4)
	loop := mountLoopback(b, filepath.Join(base, "loop-src"), filepath.Join(base, "loop-mnt"))
	targets := []struct{ name, dir string }{{"stria", c.mnt}, {"loopback", loop}}

	const bigSize = 1 << 30
	const files = 10_000
	const rounds = 3
	samples := map[string]*[2][]float64{}
	order := []string{}
	record := func(name string, target int, v float64) {
		r, ok := samples[name]
		if !ok {
			r = &[2][]float64{}
			samples[name] = r
			order = append(order, name)
		}
		r[target] = append(r[target], v)
	}

	for n := 0; n < b.N; n++ {
		for round := 0; round < rounds; round++ {
			// Interleave the systems and swap who goes first each round:
			// the machine is shared and drifts.
			idx := []int{0, 1}
			if round%2 == 1 {
				idx = []int{1, 0}
			}
			for _, stripes := range []int{1, 4} {
				for _, i := range idx {
					tg := targets[i]
					path := filepath.Join(tg.dir, fmt.Sprintf("big-c%d", stripes))
					if tg.name == "stria" {
						if out, err := stria(b, "setstripe", "-c", fmt.Sprint(stripes), "-S", "1M", path); err != nil {
							b.Fatalf("setstripe: %v\n%s", err, out)
						}
					}
					record(fmt.Sprintf("seq write 1 GiB c%d, fsync (MB/s)", stripes), i, seqWrite(b, path, bigSize))
					record(fmt.Sprintf("cold seq read 1 GiB c%d (MB/s)", stripes), i, seqRead(b, path, bigSize))
					if stripes == 1 {
						record("cold strided read, 47,008 B records, every other one (MB/s)", i, stridedRead(b, path, bigSize))
					}
					os.Remove(path)
				}
			}
			// Metadata at two degrees of concurrency: every create and
			// unlink on Stria is durable before it returns, so threads
			// share fsyncs (group commit) where the loopback has none.
			for _, workers := range []int{4, 16} {
				for _, i := range idx {
					dir := filepath.Join(targets[i].dir, "meta")
					os.Mkdir(dir, 0o755)
					creates, stats, unlinks := metaOps(b, dir, files, workers)
					record(fmt.Sprintf("creates/s (%d files, %d threads)", files, workers), i, creates)
					record(fmt.Sprintf("stats/s, uncached (%d threads)", workers), i, stats)
					record(fmt.Sprintf("unlinks/s (%d threads)", workers), i, unlinks)
					os.Remove(dir)
				}
			}
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nmedians of %d rounds\n| workload | stria | go-fuse loopback | ratio |\n|---|---|---|---|\n", rounds)
	for _, name := range order {
		r := samples[name]
		st, lo := median(r[0]), median(r[1])
		fmt.Fprintf(&sb, "| %s | %.0f | %.0f | %.2f |\n", name, st, lo, st/lo)
		metric := strings.NewReplacer(" ", "_", "(", "", ")", "", "/", "_per_", ",", "").Replace(name)
		b.ReportMetric(st/lo, "ratio:"+metric)
	}
	fmt.Print(sb.String())
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// mountLoopback mounts the reference loopback of src at mnt.
func mountLoopback(b *testing.B, src, mnt string) string {
	server, err := loopfs.Mount(src, mnt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { server.Unmount() })
	return mnt
}

// touchMemory faults in ~4 GiB so the VM's reclaimed memory does not skew
// the next timed step (FACTS.md).
func touchMemory() {
	buf := make([]byte, 4<<30)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
}

func dropCaches(b *testing.B) {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		b.Logf("cannot drop caches: %v", err)
	}
}

// settle starts a timed step from the same state for every system: no
// dirty pages, empty caches, memory faulted in.
func settle(b *testing.B) {
	dropCaches(b)
	touchMemory()
}

func seqWrite(b *testing.B, path string, size int) float64 {
	chunk := randomData(99, 1<<20)
	settle(b)
	start := time.Now()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	for off := 0; off < size; off += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return float64(size) / 1e6 / time.Since(start).Seconds()
}

func seqRead(b *testing.B, path string, size int) float64 {
	buf := make([]byte, 1<<20)
	return timedRead(b, path, func(f *os.File) int {
		total := 0
		for {
			n, err := f.Read(buf)
			total += n
			if err != nil || n == 0 {
				break
			}
		}
		if total != size {
			b.Fatalf("read %d bytes, want %d", total, size)
		}
		return total
	})
}

// stridedRead reads every other 47,008-byte record of the first quarter of
// the file at path (IOR's shared-file shape, one reader): the kernel's
// read-ahead does not follow it.
func stridedRead(b *testing.B, path string, size int) float64 {
	const record = 47008
	buf := make([]byte, record)
	return timedRead(b, path, func(f *os.File) int {
		total := 0
		for off := int64(record); off+record <= int64(size/4); off += 2 * record {
			n, err := f.ReadAt(buf, off)
			if err != nil || n != record {
				b.Fatalf("read at %d: %d bytes, %v", off, n, err)
			}
			total += n
		}
		return total
	})
}

// timedRead opens path from settled caches and returns the MB/s at which
// read, given the open file, read the bytes it returns.
func timedRead(b *testing.B, path string, read func(f *os.File) int) float64 {
	settle(b)
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	return float64(read(f)) / 1e6 / time.Since(start).Seconds()
}

// metaOps creates, stats and unlinks n empty files with the given number of
// threads, each in a directory of its own, and returns the rates.
func metaOps(b *testing.B, dir string, n, workers int) (creates, stats, unlinks float64) {
	for w := 0; w < workers; w++ {
		os.Mkdir(filepath.Join(dir, fmt.Sprint(w)), 0o755)
	}
	phase := func(op func(path string) error) float64 {
		settle(b)
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					if err := op(filepath.Join(dir, fmt.Sprint(w), fmt.Sprintf("f%d", i))); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return float64(n) / time.Since(start).Seconds()
	}
	creates = phase(func(p string) error {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	})
	stats = phase(func(p string) error { _, err := os.Stat(p); return err })
	unlinks = phase(os.Remove)
	for w := 0; w < workers; w++ {
		os.Remove(filepath.Join(dir, fmt.Sprint(w)))
	}
	return creates, stats, unlinks
}
