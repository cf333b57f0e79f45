package meta

import (
	"encoding/binary"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stria/stria/api"
	bolt "go.etcd.io/bbolt"
)

// storeWriters is the number of concurrent writers in BenchmarkStoreChoice.
const storeWriters = 16

// setParallel makes b.RunParallel use storeWriters goroutines.
func setParallel(b *testing.B) {
	b.SetParallelism((storeWriters + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
}

func benchKey(id uint64, k byte) []byte {
	key := make([]byte, 10)
	key[0] = 'I'
	binary.BigEndian.PutUint64(key[1:], id)
	key[9] = k
	return key
}

// BenchmarkStoreChoice compares durable small transactions (3 keys each, 16
// parallel writers): Pebble with this package's scheme (apply under a mutex
// with NoSync, then a shared WAL sync), Pebble committing each batch with
// Sync (its own commit pipeline, no read-check-write lock), and bbolt with
// db.Batch (its group commit). Each op returns only once durable.
func BenchmarkStoreChoice(b *testing.B) {
	value := make([]byte, 120) // about one encoded inode
	b.Run("pebble-groupcommit", func(b *testing.B) {
		db, err := pebble.Open(filepath.Join(b.TempDir(), "p"), &pebble.Options{Logger: &pebbleLogger{log: testLogger(b)}})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		var mu sync.Mutex
		var next atomic.Uint64
		setParallel(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				id := next.Add(1)
				mu.Lock()
				batch := db.NewBatch()
				for k := range byte(3) {
					batch.Set(benchKey(id, k), value, nil)
				}
				err := db.Apply(batch, pebble.NoSync)
				mu.Unlock()
				batch.Close()
				if err == nil {
					err = db.LogData(nil, pebble.Sync)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
	})
	b.Run("pebble-sync-each", func(b *testing.B) {
		db, err := pebble.Open(filepath.Join(b.TempDir(), "p"), &pebble.Options{Logger: &pebbleLogger{log: testLogger(b)}})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		var next atomic.Uint64
		setParallel(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				id := next.Add(1)
				batch := db.NewBatch()
				for k := range byte(3) {
					batch.Set(benchKey(id, k), value, nil)
				}
				if err := batch.Commit(pebble.Sync); err != nil {
					b.Error(err)
					return
				}
				batch.Close()
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
	})
	// bbolt's default batch delay (10ms), and a shorter one.
	for _, delay := range []time.Duration{10 * time.Millisecond, time.Millisecond} {
		b.Run("bbolt-batch-"+delay.String(), func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "b.db"), 0o600, &bolt.Options{Timeout: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.MaxBatchDelay = delay
			bucket := []byte("meta")
			if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bucket); return err }); err != nil {
				b.Fatal(err)
			}
			var next atomic.Uint64
			setParallel(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := next.Add(1)
					err := db.Batch(func(tx *bolt.Tx) error {
						bk := tx.Bucket(bucket)
						for k := range byte(3) {
							if err := bk.Put(benchKey(id, k), value); err != nil {
								return err
							}
						}
						return nil
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
		})
	}
	// The cost of one durable transaction alone: what group commit saves.
	b.Run("pebble-serial-reference", func(b *testing.B) {
		db, err := pebble.Open(filepath.Join(b.TempDir(), "p"), &pebble.Options{Logger: &pebbleLogger{log: testLogger(b)}})
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		for i := 0; b.Loop(); i++ {
			batch := db.NewBatch()
			for k := range byte(3) {
				batch.Set(benchKey(uint64(i), k), value, nil)
			}
			if err := batch.Commit(pebble.Sync); err != nil {
				b.Fatal(err)
			}
			batch.Close()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "txn/s")
	})
}

// BenchmarkCreate: parallel creates through NATS (16 clients in flight),
// each durable before its reply.
func BenchmarkCreate(b *testing.B) {
	h := newHarness(b, 2)
	dirs := make([]uint64, storeWriters)
	for i := range dirs {
		dirs[i] = h.mkdir(api.RootIno, "d"+itoa(i))
	}
	var next atomic.Uint64
	setParallel(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			err := h.call(api.OpCreate, api.CreateReq{Parent: dirs[n%storeWriters], Name: "f" + itoa(int(n)), Mode: regMode}, nil)
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
}

// BenchmarkLookup: parallel lookups of existing names through NATS.
func BenchmarkLookup(b *testing.B) {
	h := newHarness(b, 1)
	d := h.mkdir(api.RootIno, "d")
	const files = 256
	if err := parallel(16, files, func(i int) error {
		return h.call(api.OpCreate, api.CreateReq{Parent: d, Name: "f" + itoa(i), Mode: regMode}, nil)
	}); err != nil {
		b.Fatal(err)
	}
	var next atomic.Uint64
	setParallel(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1) % files
			if _, err := h.lookup(d, "f"+itoa(int(n))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}

// BenchmarkInodeCodec encodes and decodes a regular file's inode with a
// 4-stripe layout: the store's work for every inode read and written.
func BenchmarkInodeCodec(b *testing.B) {
	objs := make([]api.StripeObject, 4)
	for i := range objs {
		objs[i] = api.StripeObject{OST: uint32(i), ObjID: uint64(1000 + i)}
	}
	in := &inode{
		Attr:   api.Attr{Ino: 99, Mode: api.ModeReg | 0o644, Nlink: 1, Size: 1 << 30, Atime: 1, Mtime: 2, Ctime: 3},
		Layout: &api.Layout{StripeCount: 4, StripeSize: 1 << 20, Objects: objs},
	}
	for b.Loop() {
		if _, err := decodeInode(encodeInode(in)); err != nil {
			b.Fatal(err)
		}
	}
}
