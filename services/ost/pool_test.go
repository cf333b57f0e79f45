package ost

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// inodeOf returns the inode number of the file at path.
func inodeOf(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// poolFiles lists the pool directory of an OST's data directory, failing
// the test if a file there holds data.
func poolFiles(t *testing.T, dataDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "objects", "pool"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != 0 {
			t.Errorf("pool file %s holds %d bytes", e.Name(), fi.Size())
		}
		names = append(names, e.Name())
	}
	return names
}

func TestFilePool(t *testing.T) {
	cli := startEtcd(t)
	cfg := testConfig(t, "pool")
	o := startOST(t, cli, cfg, nil)
	c := newClient(t)
	ctx := t.Context()
	top := t
	const B = inlineBlockSize

	t.Run("a destroyed object's file serves the next new object, emptied", func(t *testing.T) {
		const old, fresh = 0x601, 0x602
		if err := c.Write(ctx, o.Addr(), old, 0, pattern(1, 3*B+5), true); err != nil {
			t.Fatal(err)
		}
		ino := inodeOf(t, objectPath(cfg.DataDir, old))
		before, _ := c.Statfs(ctx, o.Addr())
		if n, err := c.Destroy(ctx, o.Addr(), []uint64{old}); n != 1 || err != nil {
			t.Fatalf("destroy: %d, %v", n, err)
		}
		if _, err := os.Stat(objectPath(cfg.DataDir, old)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("destroyed object still at its path: %v", err)
		}
		if got := poolFiles(t, cfg.DataDir); len(got) != 1 {
			t.Fatalf("pool holds %v, want one file", got)
		}
		after, _ := c.Statfs(ctx, o.Addr())
		if after.Objects != before.Objects-1 {
			t.Errorf("objects %d after destroy, want %d", after.Objects, before.Objects-1)
		}
		if size, err := c.Stat(ctx, o.Addr(), old); size != 0 || err != nil {
			t.Errorf("stat of the destroyed object: %d, %v", size, err)
		}

		// Written past a hole: the old object's checksum slots must not
		// survive into the new one, nor its bytes.
		var m model
		m.write(2*B, []byte("new"))
		if err := c.Write(ctx, o.Addr(), fresh, 2*B, []byte("new"), false); err != nil {
			t.Fatal(err)
		}
		if got := inodeOf(t, objectPath(cfg.DataDir, fresh)); got != ino {
			t.Errorf("new object has inode %d, want the pooled %d", got, ino)
		}
		if got := poolFiles(t, cfg.DataDir); len(got) != 0 {
			t.Fatalf("pool still holds %v", got)
		}
		checkRead(t, ctx, c, o.Addr(), fresh, &m, 0, 4*B)
		if hasSidecar(t, objectPath(cfg.DataDir, fresh)) {
			t.Error("a small new object has a sidecar")
		}
	})

	t.Run("an object with a sidecar leaves only its data file", func(t *testing.T) {
		const obj = 0x603
		if err := c.Write(ctx, o.Addr(), obj, 0, pattern(2, (inlineBlocks+2)*B), false); err != nil {
			t.Fatal(err)
		}
		if !hasSidecar(t, objectPath(cfg.DataDir, obj)) {
			t.Fatal("a large object has no sidecar")
		}
		if _, err := c.Destroy(ctx, o.Addr(), []uint64{obj}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(objectPath(cfg.DataDir, obj) + ".crc"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("sidecar left after destroy: %v", err)
		}
		if got := poolFiles(t, cfg.DataDir); len(got) != 1 {
			t.Fatalf("pool holds %v, want one file", got)
		}
	})

	t.Run("a restart empties what a crash left in the pool", func(t *testing.T) {
		// A crash between the rename into the pool and the truncation.
		left := filepath.Join(cfg.DataDir, "objects", "pool", hexObj(1<<40))
		if err := os.WriteFile(left, pattern(3, 2*B), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := o.stop(); err != nil {
			t.Fatal(err)
		}
		o = startOST(top, cli, cfg, nil)
		c = newClient(top)
		if got := poolFiles(t, cfg.DataDir); len(got) != 2 {
			t.Fatalf("pool holds %v after restart, want two files", got)
		}
		// Both pooled files serve new objects, holding only what is written.
		for i, obj := range []uint64{0x604, 0x605} {
			var m model
			m.write(B/2, []byte("after restart"))
			if err := c.Write(ctx, o.Addr(), obj, B/2, []byte("after restart"), false); err != nil {
				t.Fatal(err)
			}
			checkRead(t, ctx, c, o.Addr(), obj, &m, 0, 3*B)
			if got := poolFiles(t, cfg.DataDir); len(got) != 1-i {
				t.Fatalf("pool holds %v after %d creates", got, i+1)
			}
		}
	})

	t.Run("without the pool directory destroys and creates still work", func(t *testing.T) {
		const obj = 0x606
		if err := c.Write(ctx, o.Addr(), obj, 0, []byte("x"), false); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(cfg.DataDir, "objects", "pool")); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Destroy(ctx, o.Addr(), []uint64{obj}); n != 1 || err != nil {
			t.Fatalf("destroy: %d, %v", n, err)
		}
		if _, err := os.Stat(objectPath(cfg.DataDir, obj)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("destroyed object still at its path: %v", err)
		}
		var m model
		m.write(0, []byte("again"))
		if err := c.Write(ctx, o.Addr(), obj, 0, []byte("again"), false); err != nil {
			t.Fatal(err)
		}
		checkRead(t, ctx, c, o.Addr(), obj, &m, 0, B)
	})
}

// pooled returns how many files p holds.
func pooled(p *filePool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free)
}

func TestFilePoolBound(t *testing.T) {
	dir := t.TempDir()
	pool := filepath.Join(dir, "pool")
	if err := os.Mkdir(pool, 0o755); err != nil {
		t.Fatal(err)
	}
	// Three files a previous run left, one of them with data; the bound
	// is two.
	for i, size := range []int{0, 100, 0} {
		if err := os.WriteFile(filepath.Join(pool, hexObj(uint64(i))), pattern(i, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(pool, "not-ours"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := openPool(pool, 2, testLogger(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if pooled(p) != 2 {
		t.Fatalf("pool holds %d files after open, want 2", pooled(p))
	}
	ours := 0
	entries, _ := os.ReadDir(pool)
	for _, e := range entries {
		fi, _ := e.Info()
		switch {
		case e.Name() == "not-ours":
			if fi.Size() != 1 {
				t.Error("a file not named by the pool was changed")
			}
		case fi.Size() != 0:
			t.Errorf("pool file %s holds %d bytes after open", e.Name(), fi.Size())
		default:
			ours++
		}
	}
	if ours != 2 {
		t.Errorf("%d pool files on disk, want 2", ours)
	}

	// A full pool refuses more: the caller unlinks.
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p.put(victim) {
		t.Fatal("a full pool took another file")
	}
	if _, err := os.Stat(victim); err != nil {
		t.Fatalf("a refused file was moved: %v", err)
	}
	// Taking frees room; an absent file is not put.
	target := filepath.Join(dir, "taken")
	f, err := p.take(target)
	if err != nil || f == nil {
		t.Fatalf("take: %v, %v", f, err)
	}
	f.Close()
	if p.put(filepath.Join(dir, "absent")) {
		t.Error("an absent file was put in the pool")
	}
	if !p.put(victim) {
		t.Fatal("the pool refused a file with room for it")
	}
	if _, err := os.Stat(victim); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a file put in the pool is still at its path: %v", err)
	}
	entries, _ = os.ReadDir(pool)
	if len(entries) != 3 { // two of ours, not-ours
		t.Fatalf("%d files in the pool directory, want 3", len(entries))
	}
	for _, e := range entries {
		if fi, _ := e.Info(); e.Name() != "not-ours" && fi.Size() != 0 {
			t.Errorf("pool file %s holds %d bytes", e.Name(), fi.Size())
		}
	}
	// Taking onto an existing name gives the file back.
	if f, err := p.take(target); f != nil || err != nil {
		t.Fatalf("take onto an existing file: %v, %v", f, err)
	}
	if pooled(p) != 2 {
		t.Errorf("pool holds %d after a refused take, want 2", pooled(p))
	}
}
