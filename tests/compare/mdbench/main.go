// Command mdbench measures the metadata and small-I/O shapes of the
// comparison harness (scripts/compare.sh) on any mounted directory, with the
// standard library only, and prints JSON.
//
//	mdbench run -dir DIR [-dir2 DIR2] [-workers 2] [-files 2000] [-ior-records 2000]
//	mdbench touch [-gib 4] [-drop]
//
// run executes, in order, each phase starting from a settled machine (sync,
// dropped caches, ~4 GiB of memory freshly touched, see FACTS.md):
//
//   - empty files, one directory per worker: create, stat, read, unlink;
//   - the mdtest "hard" shape, one directory shared by all workers, 3,901-byte
//     files: write (create+write+close), read, stat, unlink;
//   - 4 KiB files, one directory per worker: write, read, stat, unlink;
//   - the IOR "hard" shape: the workers write 47,008-byte records strided
//     into one shared file (record k at offset k*47008, writer k%workers),
//     fsync, close; then each reads back, verified, the records another
//     writer wrote. With -dir2 (DIR seen through a second mount, another
//     client of the same file system) the shape runs once more with the odd
//     workers going through DIR2, so writes share a file across clients and
//     every read crosses clients.
//
// touch faults in memory (and with -drop first syncs and drops the caches):
// run it right before a timed step of another tool.
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

const (
	hardSize   = 3901
	smallSize  = 4096
	iorRecord  = 47008
	madvHugeTP = 14 // MADV_HUGEPAGE
)

// Result is one measured figure.
type Result struct {
	Name  string  `json:"name"`
	Unit  string  `json:"unit"`
	Value float64 `json:"value"`
	Ops   int     `json:"ops"`
	Secs  float64 `json:"seconds"`
}

// Report is what run prints.
type Report struct {
	Dir     string   `json:"dir"`
	Dir2    string   `json:"dir2,omitempty"`
	Workers int      `json:"workers"`
	Files   int      `json:"files_per_worker"`
	Records int      `json:"ior_records_per_worker"`
	Results []Result `json:"results"`
	Errors  []string `json:"errors,omitempty"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "run":
		run(os.Args[2:])
	case "touch":
		fl := flag.NewFlagSet("touch", flag.ExitOnError)
		gib := fl.Float64("gib", 4, "GiB of memory to touch")
		drop := fl.Bool("drop", false, "sync and drop the page cache first")
		fl.Parse(os.Args[2:])
		if *drop {
			if err := dropCaches(); err != nil {
				fatal(err)
			}
		}
		if err := touch(*gib); err != nil {
			fatal(err)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mdbench run -dir DIR [-dir2 DIR2] [-workers N] [-files N] [-ior-records N] [-touch-gib G] [-drop=true]\n       mdbench touch [-gib G] [-drop]")
	os.Exit(2)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mdbench:", err)
	os.Exit(1)
}

// touch faults in gib GiB of anonymous memory and gives it back: this VM
// returns idle free memory to the host and re-faulting it is slow, so the
// timed step that follows must not pay for it. Huge pages keep the touch
// itself cheap when the memory is already there.
func touch(gib float64) error {
	n := int(gib * (1 << 30))
	if n <= 0 {
		return nil
	}
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return fmt.Errorf("touch: mmap %d bytes: %w", n, err)
	}
	syscall.Madvise(b, madvHugeTP) // best effort
	// One toucher per CPU: the host faults pages in faster that way.
	par := runtime.NumCPU()
	chunk := (len(b)/par + 4095) &^ 4095
	var wg sync.WaitGroup
	for off := 0; off < len(b); off += chunk {
		wg.Add(1)
		go func(s []byte) {
			defer wg.Done()
			for i := 0; i < len(s); i += 4096 {
				s[i] = 1
			}
		}(b[off:min(off+chunk, len(b))])
	}
	wg.Wait()
	return syscall.Munmap(b)
}

func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("drop caches (needs root): %w", err)
	}
	return nil
}

type bench struct {
	workers  int
	touchGiB float64
	drop     bool
	rep      *Report
}

func (b *bench) settle() {
	if b.drop {
		if err := dropCaches(); err != nil {
			fatal(err)
		}
	}
	if err := touch(b.touchGiB); err != nil {
		fatal(err)
	}
}

func (b *bench) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintln(os.Stderr, "mdbench:", msg)
	b.rep.Errors = append(b.rep.Errors, msg)
}

// phase runs op for every (worker, index) pair, each worker in its own
// goroutine, after settling the machine, and records ops/s. The first error
// of a worker stops that worker.
func (b *bench) phase(name string, n int, op func(w, i int) error) bool {
	b.settle()
	errs := make([]error, b.workers)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < b.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				if err := op(w, i); err != nil {
					errs[w] = fmt.Errorf("worker %d, file %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		b.fail("%s: %v", name, err)
		return false
	}
	ops := n * b.workers
	b.rep.Results = append(b.rep.Results, Result{Name: name, Unit: "ops/s", Value: float64(ops) / secs, Ops: ops, Secs: secs})
	return true
}

func createEmpty(p string) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

func writeFile(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readFile opens p and reads it whole into buf, expecting want bytes.
func readFile(p string, buf []byte, want int) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	total := 0
	for {
		n, err := f.Read(buf[total:])
		total += n
		if n == 0 || err != nil || total == len(buf) {
			break
		}
	}
	if total != want {
		return fmt.Errorf("%s: read %d bytes, want %d", p, total, want)
	}
	return nil
}

func statSize(p string, want int64) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.Size() != want {
		return fmt.Errorf("%s: size %d, want %d", p, st.Size(), want)
	}
	return nil
}

func run(args []string) {
	fl := flag.NewFlagSet("run", flag.ExitOnError)
	dir := fl.String("dir", "", "directory to work in (required)")
	dir2 := fl.String("dir2", "", "the same directory through a second mount, for the IOR-hard read-back")
	workers := fl.Int("workers", 2, "concurrent workers")
	files := fl.Int("files", 2000, "files per worker in each file shape")
	records := fl.Int("ior-records", 2000, "IOR-hard records per writer")
	touchGiB := fl.Float64("touch-gib", 4, "GiB of memory touched before each timed phase")
	drop := fl.Bool("drop", true, "sync and drop caches before each timed phase")
	only := fl.String("only", "empty,hard,small,ior", "comma-separated shapes to run")
	fl.Parse(args)
	if *dir == "" || *workers < 1 || *files < 1 {
		usage()
	}
	rep := &Report{Dir: *dir, Dir2: *dir2, Workers: *workers, Files: *files, Records: *records}
	b := &bench{workers: *workers, touchGiB: *touchGiB, drop: *drop, rep: rep}
	shapes := map[string]bool{}
	for _, s := range splitComma(*only) {
		shapes[s] = true
	}
	if shapes["empty"] {
		b.empty(filepath.Join(*dir, "md-empty"), *files)
	}
	if shapes["hard"] {
		b.hard(filepath.Join(*dir, "md-hard"), *files)
	}
	if shapes["small"] {
		b.small(filepath.Join(*dir, "md-small"), *files)
	}
	if shapes["ior"] && *records > 0 {
		b.ior("IOR-hard", filepath.Join(*dir, "ior-hard"), "", *records)
		if *dir2 != "" {
			b.ior("IOR-hard, 2 mounts", filepath.Join(*dir, "ior-hard-2m"), filepath.Join(*dir2, "ior-hard-2m"), *records)
		}
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Println(string(out))
	if len(rep.Errors) > 0 {
		os.Exit(1)
	}
}

func splitComma(s string) []string {
	var out []string
	for _, f := range bytes.Split([]byte(s), []byte(",")) {
		if len(f) > 0 {
			out = append(out, string(f))
		}
	}
	return out
}

func mkdirs(dirs ...string) bool {
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "mdbench:", err)
			return false
		}
	}
	return true
}

func (b *bench) workerDirs(base string) []string {
	dirs := make([]string, b.workers)
	for w := range dirs {
		dirs[w] = filepath.Join(base, fmt.Sprintf("w%d", w))
	}
	return dirs
}

func (b *bench) empty(base string, n int) {
	dirs := b.workerDirs(base)
	if !mkdirs(dirs...) {
		b.fail("empty: cannot create %s", base)
		return
	}
	defer os.RemoveAll(base)
	name := func(w, i int) string { return filepath.Join(dirs[w], fmt.Sprintf("f%d", i)) }
	if !b.phase("empty: creates", n, func(w, i int) error { return createEmpty(name(w, i)) }) {
		return
	}
	b.phase("empty: stats", n, func(w, i int) error { return statSize(name(w, i), 0) })
	bufs := make([][]byte, b.workers)
	for w := range bufs {
		bufs[w] = make([]byte, 4096)
	}
	b.phase("empty: reads", n, func(w, i int) error { return readFile(name(w, i), bufs[w], 0) })
	b.phase("empty: unlinks", n, func(w, i int) error { return os.Remove(name(w, i)) })
}

func fill(size int, seed uint64) []byte {
	buf := make([]byte, size)
	fillRecord(buf, seed)
	return buf
}

// fillRecord fills buf (a multiple of 8 bytes long, or not) with a
// pseudo-random sequence derived from seed.
func fillRecord(buf []byte, seed uint64) {
	x := seed*0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019
	var tmp [8]byte
	for i := 0; i < len(buf); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(tmp[:], x)
		copy(buf[i:], tmp[:])
	}
}

func (b *bench) hard(base string, n int) {
	if !mkdirs(base) {
		b.fail("hard: cannot create %s", base)
		return
	}
	defer os.RemoveAll(base)
	data := fill(hardSize, 3901)
	name := func(w, i int) string { return filepath.Join(base, fmt.Sprintf("file.mdtest.%d.%d", w, i)) }
	if !b.phase("mdtest-hard: writes (3,901 B)", n, func(w, i int) error { return writeFile(name(w, i), data) }) {
		return
	}
	bufs := make([][]byte, b.workers)
	for w := range bufs {
		bufs[w] = make([]byte, hardSize+1)
	}
	b.phase("mdtest-hard: reads", n, func(w, i int) error { return readFile(name(w, i), bufs[w], hardSize) })
	b.phase("mdtest-hard: stats", n, func(w, i int) error { return statSize(name(w, i), hardSize) })
	b.phase("mdtest-hard: unlinks", n, func(w, i int) error { return os.Remove(name(w, i)) })
}

func (b *bench) small(base string, n int) {
	dirs := b.workerDirs(base)
	if !mkdirs(dirs...) {
		b.fail("small: cannot create %s", base)
		return
	}
	defer os.RemoveAll(base)
	data := fill(smallSize, 4096)
	name := func(w, i int) string { return filepath.Join(dirs[w], fmt.Sprintf("s%d", i)) }
	if !b.phase("4 KiB files: writes", n, func(w, i int) error { return writeFile(name(w, i), data) }) {
		return
	}
	bufs := make([][]byte, b.workers)
	for w := range bufs {
		bufs[w] = make([]byte, smallSize+1)
	}
	b.phase("4 KiB files: reads", n, func(w, i int) error { return readFile(name(w, i), bufs[w], smallSize) })
	b.phase("4 KiB files: stats", n, func(w, i int) error { return statSize(name(w, i), smallSize) })
	b.phase("4 KiB files: unlinks", n, func(w, i int) error { return os.Remove(name(w, i)) })
}

// ior is the IOR "hard" shape: every writer writes records of 47,008 bytes
// interleaved with the others' into one shared file, fsyncs and closes; then
// every reader reads back, verified, the records of the next writer. With
// base2 (the same directory through another mount) the odd workers go
// through it, so each reader reads what the other client wrote.
func (b *bench) ior(label, base, base2 string, records int) {
	if !mkdirs(base) {
		b.fail("%s: cannot create %s", label, base)
		return
	}
	defer os.RemoveAll(base)
	path := filepath.Join(base, "IOR_file")
	// The writers' views of the file: even workers through -dir, odd ones
	// through -dir2 when given.
	paths := make([]string, b.workers)
	for w := range paths {
		paths[w] = path
		if base2 != "" && w%2 == 1 {
			paths[w] = filepath.Join(base2, "IOR_file")
		}
	}
	if err := createEmpty(path); err != nil {
		b.fail("%s: %v", label, err)
		return
	}
	total := int64(records) * int64(b.workers) * iorRecord
	run := func(name string, op func(w int) error) bool {
		b.settle()
		errs := make([]error, b.workers)
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < b.workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[w] = op(w)
			}()
		}
		wg.Wait()
		secs := time.Since(start).Seconds()
		if err := errors.Join(errs...); err != nil {
			b.fail("%s: %v", name, err)
			return false
		}
		b.rep.Results = append(b.rep.Results, Result{Name: name, Unit: "MB/s", Value: float64(total) / 1e6 / secs, Ops: records * b.workers, Secs: secs})
		return true
	}
	ok := run(label+": write+fsync (47,008 B records)", func(w int) error {
		f, err := os.OpenFile(paths[w], os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		buf := make([]byte, iorRecord)
		for i := 0; i < records; i++ {
			k := int64(i)*int64(b.workers) + int64(w)
			fillRecord(buf, uint64(k))
			if _, err := f.WriteAt(buf, k*iorRecord); err != nil {
				f.Close()
				return fmt.Errorf("writer %d, record %d: %w", w, k, err)
			}
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("writer %d: fsync: %w", w, err)
		}
		return f.Close()
	})
	if !ok {
		return
	}
	run(label+": read, verified", func(w int) error {
		f, err := os.Open(paths[w])
		if err != nil {
			return err
		}
		defer f.Close()
		from := (w + 1) % b.workers // read what the next writer wrote
		buf := make([]byte, iorRecord)
		want := make([]byte, iorRecord)
		bad := 0
		var first error
		for i := 0; i < records; i++ {
			k := int64(i)*int64(b.workers) + int64(from)
			n, err := f.ReadAt(buf, k*iorRecord)
			if err != nil || n != iorRecord {
				return fmt.Errorf("reader %d, record %d: %d bytes, %v", w, k, n, err)
			}
			fillRecord(want, uint64(k))
			if !bytes.Equal(buf, want) {
				bad++
				if first == nil {
					first = fmt.Errorf("reader %d: record %d (offset %d) differs from what writer %d wrote", w, k, k*iorRecord, from)
				}
			}
		}
		if bad > 0 {
			return fmt.Errorf("%w; %d of %d records differ", first, bad, records)
		}
		return nil
	})
}
