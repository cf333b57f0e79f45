package ost

import (
	"sync/atomic"
	"testing"
)

// benchOST starts etcd and one OST for a benchmark.
func benchOST(b *testing.B) (*testOST, string) {
	b.Helper()
	cli := startEtcd(b)
	cfg := NewConfig()
	cfg.DataDir = b.TempDir()
	cfg.FSName = "bench"
	o := startOST(b, cli, cfg, nil)
	return o, o.Addr()
}

// BenchmarkWrite1MiB writes 1 MiB at a time (aligned) into a 64 MiB
// object, so the data stays in the page cache.
func BenchmarkWrite1MiB(b *testing.B) {
	_, addr := benchOST(b)
	c := newClient(b)
	ctx := b.Context()
	data := pattern(1, 1<<20)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := c.Write(ctx, addr, 1, int64(i%64)<<20, data, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite1MiBParallel writes 1 MiB at a time from several
// connections into separate objects.
func BenchmarkWrite1MiBParallel(b *testing.B) {
	_, addr := benchOST(b)
	c := newClient(b)
	ctx := b.Context()
	data := pattern(1, 1<<20)
	var next atomic.Uint64
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		obj := next.Add(1)
		for i := 0; pb.Next(); i++ {
			if err := c.Write(ctx, addr, obj, int64(i%32)<<20, data, false); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRead1MiB reads 1 MiB at a time (aligned, verified) from a 64 MiB
// object.
func BenchmarkRead1MiB(b *testing.B) {
	_, addr := benchOST(b)
	c := newClient(b)
	ctx := b.Context()
	data := pattern(1, 1<<20)
	for i := range 64 {
		if err := c.Write(ctx, addr, 1, int64(i)<<20, data, false); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if n, err := c.Read(ctx, addr, 1, int64(i%64)<<20, buf); err != nil || n != len(buf) {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkRead1MiBShared is BenchmarkRead1MiB for a client on the OST's
// machine: over the Unix socket, the data left in shared memory.
func BenchmarkRead1MiBShared(b *testing.B) {
	o, addr := benchOST(b)
	c := newClient(b)
	c.Sockets = &socketsFor{addr: addr, path: o.cfg.Socket}
	ctx := b.Context()
	data := pattern(1, 1<<20)
	for i := range 64 {
		if err := c.Write(ctx, addr, 1, int64(i)<<20, data, false); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		got, done, err := c.ReadShared(ctx, addr, 1, int64(i%64)<<20, buf)
		if err != nil || len(got) != len(buf) {
			b.Fatal(len(got), err)
		}
		done()
	}
}

// BenchmarkWrite4KiB measures the per-request cost: a small unaligned
// overwrite (read-modify-write of one block).
func BenchmarkWrite4KiB(b *testing.B) {
	_, addr := benchOST(b)
	c := newClient(b)
	ctx := b.Context()
	data := pattern(1, 4<<10)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := c.Write(ctx, addr, 1, int64(i%256)*4100, data, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreate measures creating small objects.
func BenchmarkCreate(b *testing.B) {
	_, addr := benchOST(b)
	c := newClient(b)
	ctx := b.Context()
	data := pattern(1, 100)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := c.Write(ctx, addr, uint64(i), 0, data, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBlockCRC is the checksum of one 4 KiB block.
func BenchmarkBlockCRC(b *testing.B) {
	block := pattern(1, sidecarBlockSize)
	b.SetBytes(sidecarBlockSize)
	for b.Loop() {
		blockCRC(block, sidecarBlockSize)
	}
}
