package ost

import (
	"math/bits"
	"sync"
)

// bufPool recycles byte buffers in power-of-two size classes from 64 KiB to
// 16 MiB, enough for the largest frame plus its edge blocks.
type bufPool struct {
	classes [bufClasses]sync.Pool
}

const (
	minBufShift = 16 // 64 KiB
	bufClasses  = 9  // 64 KiB .. 16 MiB
)

// get returns a buffer of length n; its contents are arbitrary.
func (p *bufPool) get(n int) *[]byte {
	c := bufClass(n)
	if c >= bufClasses {
		b := make([]byte, n)
		return &b
	}
	if v := p.classes[c].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(minBufShift+c))
	return &b
}

// put returns a buffer obtained from get.
func (p *bufPool) put(b *[]byte) {
	c := bufClass(cap(*b))
	if c >= bufClasses || cap(*b) != 1<<(minBufShift+c) {
		return
	}
	p.classes[c].Put(b)
}

// bufClass is the smallest class holding n bytes.
func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}
