package iobuf

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestBuffers: a buffer has the length asked for and its class's capacity,
// lies in the arena aligned to its size (or to a huge page), overlaps no
// other, and comes back for the next Get of its class once put.
func TestBuffers(t *testing.T) {
	a := &arena{size: 64 << 20, noTrimLoop: true}
	sizes := []int{1, 4096, 64 << 10, 64<<10 + 1, 200 << 10, 1 << 20, 1<<20 + 128, 3 << 20, 16 << 20}
	var got []*[]byte
	for i, n := range sizes {
		b := a.get(n)
		want := classSize(class(n))
		if len(*b) != n || cap(*b) != want {
			t.Fatalf("get(%d): len %d cap %d, want len %d cap %d", n, len(*b), cap(*b), n, want)
		}
		if !a.holds(*b) {
			t.Fatalf("get(%d): not from the arena", n)
		}
		if align := uintptr(min(want, hugePage)); addr(*b)%align != 0 {
			t.Fatalf("get(%d) at %#x: not aligned to %d", n, addr(*b), align)
		}
		full := (*b)[:cap(*b)]
		for j := range full {
			full[j] = byte(i + 1)
		}
		got = append(got, b)
	}
	for i, b := range got {
		for j, v := range (*b)[:cap(*b)] {
			if v != byte(i+1) {
				t.Fatalf("buffer %d byte %d is %d: another buffer overlaps it", i, j, v)
			}
		}
	}
	a.put(got[5]) // 1 MiB
	if b := a.get(700 << 10); addr(*b) != addr(*got[5]) || len(*b) != 700<<10 {
		t.Fatalf("get after put: a new buffer (or length %d), want the 1 MiB one put back", len(*b))
	}
	// A buffer too large for any class, or not whole, is never pooled.
	huge := a.get(32 << 20)
	if a.holds(*huge) {
		t.Fatal("a 32 MiB buffer came from the arena")
	}
	part := (*got[4])[4096:]
	a.put(&part)
	if n := len(a.free[class(cap(part))]); n != 0 {
		t.Fatalf("a slice of a buffer was pooled (%d in its class's free list)", n)
	}
}

// TestArenaFull: once the arena is handed out, buffers come from the heap
// and are not kept when put back; buffers put back are still reused.
func TestArenaFull(t *testing.T) {
	a := &arena{size: 4 << 20, noTrimLoop: true}
	b1, b2 := a.get(2<<20), a.get(2<<20)
	if !a.holds(*b1) || !a.holds(*b2) {
		t.Fatal("the first 4 MiB did not come from a 4 MiB arena")
	}
	b3 := a.get(1 << 20)
	if a.holds(*b3) {
		t.Fatal("a buffer beyond the arena's size came from it")
	}
	if len(*b3) != 1<<20 || cap(*b3) != 1<<20 {
		t.Fatalf("heap buffer: len %d cap %d", len(*b3), cap(*b3))
	}
	a.put(b3)
	if n := len(a.free[class(1<<20)]); n != 0 {
		t.Fatalf("a heap buffer was pooled (%d in the free list)", n)
	}
	a.put(b1)
	if b := a.get(2 << 20); addr(*b) != addr(*b1) {
		t.Fatal("a buffer put back into a full arena was not reused")
	}
}

// TestHugePageAdvice: the arena is eligible for transparent huge pages
// whenever the kernel gives them to memory that asks (THP "madvise" or
// "always"), which the Go heap here does not.
func TestHugePageAdvice(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if errors.Is(err, fs.ErrNotExist) {
		t.Skip("this kernel has no transparent huge pages: there is nothing to advise")
	}
	if err != nil {
		t.Fatalf("THP setting: %v", err)
	}
	want := "0"
	if !strings.Contains(string(mode), "[never]") {
		want = "1"
	}
	a := &arena{size: 8 << 20, noTrimLoop: true}
	b := a.get(1 << 20)
	(*b)[0] = 1
	got := smapsField(t, addr(a.mem), "THPeligible")
	if got != want {
		t.Fatalf("THPeligible of the arena: %s, want %s (THP %s)", got, want, strings.TrimSpace(string(mode)))
	}
}

// smapsField returns field of the mapping holding address p.
func smapsField(t *testing.T, p uintptr, field string) string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uintptr
		if n, _ := fmt.Sscanf(line, "%x-%x", &lo, &hi); n == 2 && strings.Contains(line, " ") && !strings.HasSuffix(strings.Fields(line)[0], ":") {
			in = lo <= p && p < hi
			continue
		}
		if in && strings.HasPrefix(line, field+":") {
			return strings.TrimSpace(strings.TrimPrefix(line, field+":"))
		}
	}
	t.Fatalf("no mapping holds %#x in /proc/self/smaps", p)
	return ""
}

// TestConcurrent: Get and Put from many goroutines hand no buffer to two
// holders at once (run with -race).
func TestConcurrent(t *testing.T) {
	a := &arena{size: 32 << 20, noTrimLoop: true}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				b := a.get((i%5 + 1) * 100 << 10)
				v := byte(g*31 + i)
				for j := range *b {
					(*b)[j] = v
				}
				for j, x := range *b {
					if x != v {
						t.Errorf("goroutine %d: byte %d changed under it", g, j)
						return
					}
				}
				a.put(b)
			}
		}()
	}
	wg.Wait()
}

// TestTrim: a huge page whose buffers all lay unused in their free lists
// for a whole period between two trims is given back to the kernel; one
// with a buffer still held, or used during the period, is not; a released
// buffer works again when handed out.
func TestTrim(t *testing.T) {
	a := &arena{size: 16 << 20, noTrimLoop: true}
	big := a.get(4 << 20) // huge pages 0 and 1
	var small []*[]byte   // 512 KiB each: four in page 2, four in page 3
	for range 8 {
		small = append(small, a.get(512<<10))
	}
	for i, b := range append([]*[]byte{big}, small...) {
		for j := range *b {
			(*b)[j] = byte(i + 1)
		}
	}
	a.put(big)
	for _, b := range small[:7] {
		a.put(b)
	}
	resident := func(b *[]byte) bool {
		t.Helper()
		vec := make([]byte, (cap(*b)+os.Getpagesize()-1)/os.Getpagesize())
		full := (*b)[:cap(*b)]
		if _, _, e := unix.Syscall(unix.SYS_MINCORE, addr(full), uintptr(len(full)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			t.Fatal("mincore:", e)
		}
		for _, v := range vec {
			if v&1 == 0 {
				return false
			}
		}
		return true
	}
	expect := func(when string, want bool, bufs ...*[]byte) {
		t.Helper()
		for _, b := range bufs {
			if got := resident(b); got != want {
				t.Fatalf("%s: buffer at %#x resident %v, want %v", when, addr(*b), got, want)
			}
		}
	}
	expect("touched", true, append([]*[]byte{big}, small...)...)
	a.trim() // the first period starts: nothing has been idle through one
	expect("after the first trim", true, append([]*[]byte{big}, small...)...)
	a.trim()
	expect("idle a whole period", false, append([]*[]byte{big}, small[:4]...)...)
	expect("sharing a huge page with a held buffer", true, small[4:]...)
	for j, v := range *small[7] {
		if v != 9 {
			t.Fatalf("held buffer byte %d is %d after trim, want 9", j, v)
		}
	}

	// Used during a period (put back, taken, put back): not idle.
	a.put(small[7])
	if b := a.get(512 << 10); b != small[7] {
		t.Fatal("get did not return the buffer just put back")
	}
	a.put(small[7])
	a.trim()
	expect("used during the period", true, small[4:]...)
	a.trim()
	expect("idle since", false, small[4:]...)

	// Released memory works again, and what is handed out is not idle.
	b := a.get(4 << 20)
	if b != big {
		t.Fatal("get(4 MiB) did not return the released buffer")
	}
	for j := range *b {
		(*b)[j] = 0xAB
	}
	a.trim()
	a.trim()
	expect("handed out again", true, b)
	for j, v := range *b {
		if v != 0xAB {
			t.Fatalf("byte %d is %#x, want 0xab", j, v)
		}
	}
}
