// Package iobuf hands out the large buffers of the data path (a FUSE write's
// copy for write-behind, read-ahead chunks, an OST's read and frame
// buffers) from one arena per process whose memory the kernel backs with
// huge pages.
//
// Why: on the VMs measured here the first touch of a 4 KiB page of
// anonymous memory costs ~13 µs (the host supplies the page), against
// ~0.3 µs per 4 KiB when the page is a 2 MiB one. Go's heap is not advised
// for huge pages, and with the kernel's transparent huge pages in their
// common "madvise" mode it gets 4 KiB pages: the first 512 MiB read of a
// freshly started `stria up` faulted 8,100-8,600 pages in its OSTs' read
// buffers and ran at 815-910 MB/s; from an arena advised MADV_HUGEPAGE,
// 67-437 faults and 1,329-1,377 MB/s.
//
// Buffers come in power-of-two classes from 64 KiB to 16 MiB, each aligned
// to its size (or to the huge page, for larger ones) so that none straddles
// two huge pages, and go back to a free list of their class: the arena's
// memory, once touched, stays with the process for its next use (a garbage
// collection does not empty it, as it does a sync.Pool). The arena is
// address space reserved once (arenaBytes); memory is used only where
// buffers were touched. When it is exhausted, or could not be mapped,
// buffers come from Go's heap and are left to the collector when put back.
//
// Memory left idle is given back: every trimEvery, each huge page all of
// whose buffers lay unused in their free lists since the last trim is
// released to the kernel (MADV_DONTNEED; the buffers stay in their lists,
// and the next use faults the page in again, a huge page at a time). Only
// whole huge pages are released: releasing part of one would split it, and
// its 4 KiB pages would then cost the full price to fault back in.
//
// The arena is the process's, as the heap is: `stria up` runs its mount and
// its OSTs in one process, and they share it.
package iobuf

import (
	"math/bits"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	minShift   = 16      // 64 KiB, the smallest class
	numClasses = 9       // 64 KiB .. 16 MiB
	hugePage   = 2 << 20 // the alignment that lets the kernel use huge pages
	// arenaBytes is the address space reserved: the most the data path
	// keeps in buffers at once in the measured workloads is about a third
	// of it (64 MiB of write-behind, 64 MiB of read-ahead, the OSTs'
	// requests in flight).
	arenaBytes = 512 << 20
	// trimEvery is how often idle memory is given back: a huge page is
	// released once its buffers have lain unused for one to two periods.
	trimEvery = 10 * time.Second
)

type arena struct {
	size       int  // bytes to reserve; 0 means arenaBytes
	noTrimLoop bool // tests call trim themselves
	once       sync.Once
	mem        []byte // the mapping, nil if there is none

	mu   sync.Mutex
	next int // mem[next:] has never been handed out
	free [numClasses][]*[]byte
	// lowWater is, per class, the fewest buffers its free list held since
	// the last trim: the bottom lowWater of the list lay unused throughout.
	lowWater [numClasses]int
	// Per huge page of mem: how many buffers were carved from it (a buffer
	// of several huge pages counts in each), and whether it is released
	// (no buffer of it handed out since).
	carved   []int32
	released []bool
}

var shared arena

// Get returns a buffer of length n; its contents are arbitrary. Give it
// back with Put once nothing refers to it.
func Get(n int) *[]byte { return shared.get(n) }

// Put returns a buffer obtained from Get. The buffer must not be used
// after, through b or any slice of it.
func Put(b *[]byte) { shared.put(b) }

func (a *arena) get(n int) *[]byte {
	c := class(n)
	if c >= numClasses {
		b := make([]byte, n)
		return &b
	}
	a.once.Do(a.mapArena)
	size := classSize(c)
	a.mu.Lock()
	if l := a.free[c]; len(l) > 0 {
		b := l[len(l)-1]
		a.free[c] = l[:len(l)-1]
		a.lowWater[c] = min(a.lowWater[c], len(l)-1)
		first, last := a.pages(*b)
		clear(a.released[first:last])
		a.mu.Unlock()
		*b = (*b)[:n]
		return b
	}
	off := alignUp(a.next, min(size, hugePage))
	if a.mem == nil || off+size > len(a.mem) {
		a.mu.Unlock()
		b := make([]byte, n, size)
		return &b
	}
	a.next = off + size
	b := a.mem[off : off+n : off+size]
	first, last := a.pages(b)
	for p := first; p < last; p++ {
		a.carved[p]++
	}
	a.mu.Unlock()
	return &b
}

func (a *arena) put(b *[]byte) {
	a.once.Do(a.mapArena) // a.mem is set before holds reads it
	if !a.holds(*b) {
		return // from the heap: the collector's
	}
	c := class(cap(*b))
	a.mu.Lock()
	a.free[c] = append(a.free[c], b)
	a.mu.Unlock()
}

// pages returns the huge pages of mem that buffer b (from the arena) lies
// in: first to last, exclusive.
func (a *arena) pages(b []byte) (first, last int) {
	off := int(addr(b) - addr(a.mem))
	return off / hugePage, (off + cap(b) + hugePage - 1) / hugePage
}

// trim releases every huge page all of whose buffers lay in their free
// lists, unused, since the previous trim, and starts the next period.
func (a *arena) trim() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.mem == nil {
		return
	}
	idle := make([]int32, len(a.carved))
	for c := range a.free {
		for _, b := range a.free[c][:a.lowWater[c]] {
			first, last := a.pages(*b)
			for p := first; p < last; p++ {
				idle[p]++
			}
		}
		a.lowWater[c] = len(a.free[c])
	}
	releasable := func(p int) bool {
		return !a.released[p] && a.carved[p] > 0 && idle[p] == a.carved[p]
	}
	// Under the lock: a buffer handed out while its page is being
	// released would lose what is written to it. Runs of pages go in
	// one call.
	for p := 0; p < len(idle); p++ {
		run := p
		for p < len(idle) && releasable(p) {
			a.released[p] = true
			p++
		}
		if p > run {
			// Advice: if it fails the memory just stays.
			_ = unix.Madvise(a.mem[run*hugePage:p*hugePage], unix.MADV_DONTNEED)
		}
	}
}

// trimLoop gives idle memory back for the life of the process, as the
// runtime's scavenger does for the heap.
func (a *arena) trimLoop() {
	for range time.Tick(trimEvery) {
		a.trim()
	}
}

// holds says whether b is a whole buffer of the arena's (its capacity one
// class, as get made it).
func (a *arena) holds(b []byte) bool {
	if a.mem == nil || cap(b) == 0 {
		return false
	}
	start, p := addr(a.mem), addr(b)
	c := class(cap(b))
	return p >= start && p < start+uintptr(len(a.mem)) && c < numClasses && cap(b) == classSize(c)
}

// mapArena reserves the arena, aligned to a huge page, and advises it for
// huge pages. On failure the arena stays empty and every buffer comes from
// the heap. MAP_NORESERVE: only touched pages are memory.
func (a *arena) mapArena() {
	size := a.size
	if size == 0 {
		size = arenaBytes
	}
	m, err := unix.Mmap(-1, 0, size+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return
	}
	skip := alignUp(int(addr(m)), hugePage) - int(addr(m))
	mem := m[skip : skip+size]
	// Advice only: without huge pages the arena still works.
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE)
	a.mem = mem
	pages := (size + hugePage - 1) / hugePage
	a.carved = make([]int32, pages)
	a.released = make([]bool, pages)
	if !a.noTrimLoop {
		go a.trimLoop()
	}
}

// class is the smallest class holding n bytes (numClasses or more if none).
func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

// classSize is the capacity of class c's buffers.
func classSize(c int) int { return 1 << (minShift + c) }

func alignUp(n, a int) int { return (n + a - 1) &^ (a - 1) }

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
