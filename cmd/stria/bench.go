package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// benchResult is one line of `stria bench`.
type benchResult struct {
	Item  string  `json:"item"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Cost  float64 `json:"cost"`
	CostU string  `json:"cost_unit"`
}

// runBench measures a mounted directory in the spirit of `juicefs bench`:
// big files written and read sequentially in 1 MiB blocks, small files
// written and read whole, and stats of the small files, by N threads.
func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	bigArg := fs.String("big-file-size", "1G", "size of each thread's big file (0 skips)")
	smallArg := fs.String("small-file-size", "128K", "size of each small file")
	small := fs.Int("small-files", 100, "small files per thread (0 skips)")
	threads := fs.Int("threads", 1, "parallel threads")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: stria bench [--big-file-size 1G] [--small-files 100] [--threads N] [--json] PATH")
	}
	bigSize, err := parseSizeOrZero(*bigArg)
	if err != nil {
		return err
	}
	smallSize, err := parseSize(*smallArg)
	if err != nil {
		return err
	}
	if *threads < 1 || *threads > 1024 || *small < 0 {
		return errors.New("--threads must be 1..1024 and --small-files not negative")
	}
	dir, err := os.MkdirTemp(fs.Arg(0), "__stria_bench_")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	b := &bench{dir: dir, threads: *threads, block: make([][]byte, *threads)}
	for i := range b.block {
		b.block[i] = make([]byte, 1<<20)
		for j := range b.block[i] {
			b.block[i][j] = byte(j*7 + i)
		}
	}
	var results []benchResult
	add := func(item string, bytes int64, count int, d time.Duration) {
		if bytes > 0 {
			results = append(results, benchResult{item, float64(bytes) / (1 << 20) / d.Seconds(), "MiB/s", d.Seconds() * float64(*threads) / float64(count), "s/file"})
		} else {
			results = append(results, benchResult{item, float64(count) / d.Seconds(), "files/s", d.Seconds() * 1e3 * float64(*threads) / float64(count), "ms/file"})
		}
	}
	if bigSize > 0 {
		n := int64(*threads)
		d, err := b.run(ctx, "write big file", n*int64(bigSize), 1, func(t, i int) error { return b.writeFile(t, "big", i, int64(bigSize), true) })
		if err != nil {
			return err
		}
		add("Write big file", n*int64(bigSize), *threads, d)
		d, err = b.run(ctx, "read big file", n*int64(bigSize), 1, func(t, i int) error { return b.readFile(t, "big", i) })
		if err != nil {
			return err
		}
		add("Read big file", n*int64(bigSize), *threads, d)
	}
	if *small > 0 {
		total := int64(*threads) * int64(*small) * int64(smallSize)
		count := *threads * *small
		d, err := b.run(ctx, "write small files", total, *small, func(t, i int) error { return b.writeFile(t, "small", i, int64(smallSize), false) })
		if err != nil {
			return err
		}
		add("Write small file", 0, count, d)
		d, err = b.run(ctx, "read small files", total, *small, func(t, i int) error { return b.readFile(t, "small", i) })
		if err != nil {
			return err
		}
		add("Read small file", 0, count, d)
		d, err = b.run(ctx, "stat files", int64(count), *small, func(t, i int) error {
			_, err := os.Stat(b.path(t, "small", i))
			b.done.Add(1)
			return err
		})
		if err != nil {
			return err
		}
		add("Stat file", 0, count, d)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"threads": *threads, "big_file_size": bigSize, "small_file_size": smallSize, "small_files": *small, "results": results})
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintf(w, "ITEM\tVALUE\tCOST\n")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%.2f %s\t%.3f %s\n", r.Item, r.Value, r.Unit, r.Cost, r.CostU)
	}
	return w.Flush()
}

type bench struct {
	dir     string
	threads int
	block   [][]byte     // each thread's 1 MiB write buffer
	done    atomic.Int64 // progress of the running step
}

func (b *bench) path(thread int, kind string, i int) string {
	return filepath.Join(b.dir, fmt.Sprintf("%s.%d.%d", kind, thread, i))
}

// run calls fn(thread, i) for i < perThread on every thread and shows a
// progress bar of the units fn reports, over total.
func (b *bench) run(ctx context.Context, what string, total int64, perThread int, fn func(thread, i int) error) (time.Duration, error) {
	done := &b.done
	done.Store(0)
	stop := make(chan struct{})
	var bar sync.WaitGroup
	bar.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			progress(what, done.Load(), total)
			select {
			case <-stop:
				progress(what, total, total)
				fmt.Fprintln(os.Stderr)
				return
			case <-tick.C:
			}
		}
	})
	start := time.Now()
	errs := make(chan error, b.threads)
	var wg sync.WaitGroup
	for t := 0; t < b.threads; t++ {
		wg.Go(func() {
			for i := 0; i < perThread && ctx.Err() == nil; i++ {
				if err := fn(t, i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	bar.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return elapsed, ctx.Err()
}

func progress(what string, done, total int64) {
	const width = 40
	filled := int(int64(width) * done / max(total, 1))
	bar := make([]byte, width)
	for i := range bar {
		if i < filled {
			bar[i] = '#'
		} else {
			bar[i] = '.'
		}
	}
	fmt.Fprintf(os.Stderr, "\r%-18s [%s] %3d%%", what, bar, 100*done/max(total, 1))
}

// writeFile writes size bytes in 1 MiB blocks; big files are fsynced so the
// figure is what reached the OSTs' disks.
func (b *bench) writeFile(thread int, kind string, i int, size int64, sync bool) error {
	f, err := os.Create(b.path(thread, kind, i))
	if err != nil {
		return err
	}
	block := b.block[thread]
	for off := int64(0); off < size; off += int64(len(block)) {
		n := min(int64(len(block)), size-off)
		if _, err := f.Write(block[:n]); err != nil {
			f.Close()
			return err
		}
		b.done.Add(n)
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func (b *bench) readFile(thread int, kind string, i int) error {
	f, err := os.Open(b.path(thread, kind, i))
	if err != nil {
		return err
	}
	defer f.Close()
	buf := b.block[thread]
	for {
		n, err := f.Read(buf)
		b.done.Add(int64(n))
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func parseSizeOrZero(s string) (uint64, error) {
	if s == "0" {
		return 0, nil
	}
	return parseSize(s)
}
