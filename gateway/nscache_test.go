package gateway

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stria/stria/api"
)

// fakeLocks grants every lock at once while valid (the lock service itself
// is tested in services/lockd, the two together in tests/).
type fakeLocks struct {
	mu        sync.Mutex
	valid     bool
	enqueued  []uint64
	cancelled []uint64
}

func (f *fakeLocks) Valid() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.valid
}

func (f *fakeLocks) ValidFor() time.Duration {
	if f.Valid() {
		return 5 * time.Second
	}
	return 0
}

func (f *fakeLocks) Enqueue(_ context.Context, dirs []uint64) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enqueued = append(f.enqueued, dirs...)
	return f.valid, nil
}

func (f *fakeLocks) Cancel(_ context.Context, dirs []uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelled = append(f.cancelled, dirs...)
	return nil
}

const (
	testDir = 10
	fileF   = 11 // in testDir, one link
	fileH   = 12 // in testDir, hard-linked
	subDir  = 13 // in testDir
)

func fileAttr(ino, parent uint64) api.Attr {
	return api.Attr{Ino: ino, Mode: api.ModeReg | 0o644, Nlink: 1, Parent: parent}
}

// newTestCache returns a cache whose directory listing of testDir holds
// f, h (hard-linked: no parent) and sub, and which records what it asks the
// kernel to drop.
func newTestCache(t *testing.T) (*nsCache, *fakeLocks, *dropRecorder) {
	t.Helper()
	locks := &fakeLocks{valid: true}
	c := newNSCache(locks, time.Minute, slog.New(slog.DiscardHandler))
	c.list = func(_ context.Context, dir uint64, _ int) (api.ReadDirResp, error) {
		if dir != testDir {
			return api.ReadDirResp{}, nil
		}
		return api.ReadDirResp{Entries: []api.DirEntry{
			{Name: "f", Attr: fileAttr(fileF, testDir)},
			{Name: "h", Attr: fileAttr(fileH, 0)},
			{Name: "sub", Attr: api.Attr{Ino: subDir, Mode: api.ModeDir | 0o755, Parent: testDir}},
		}}, nil
	}
	rec := &dropRecorder{}
	c.invalidate = func(d []dropped) {
		rec.mu.Lock()
		rec.drops = append(rec.drops, d...)
		rec.mu.Unlock()
	}
	return c, locks, rec
}

// dropRecorder keeps what the cache asked the kernel to drop.
type dropRecorder struct {
	mu    sync.Mutex
	drops []dropped
}

func (r *dropRecorder) get() []dropped {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.drops)
}

// holdDir makes the cache take testDir's lock (as a missed lookup does) and
// waits until it is held and the directory primed.
func holdDir(t *testing.T, c *nsCache) {
	t.Helper()
	c.lookup(testDir, "x") // a miss asks for the lock
	waitUntil(t, "the directory's lock held and the directory primed", func() bool {
		_, absent, ok := c.lookup(testDir, "x")
		return ok && absent
	})
}

// waitUntil polls cond until it holds, failing the test after 5 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNSCacheAnswersUnderTheLock(t *testing.T) {
	c, _, drops := newTestCache(t)
	if _, _, ok := c.lookup(testDir, "f"); ok {
		t.Fatal("answered before holding the lock")
	}
	holdDir(t, c)
	r, absent, ok := c.lookup(testDir, "f")
	if !ok || absent || r.Attr.Ino != fileF {
		t.Fatalf("lookup of f under the lock: %+v absent %v ok %v", r, absent, ok)
	}
	if _, absent, ok := c.lookup(testDir, "nope"); !ok || !absent {
		t.Fatal("a complete directory did not answer absent")
	}
	// A hard-linked file's attributes are covered by no directory, a
	// subdirectory's by its own lock (not held): the name is known, the
	// entry must still come from meta.
	for _, name := range []string{"h", "sub"} {
		if _, _, ok := c.lookup(testDir, name); ok {
			t.Fatalf("lookup of %s answered without a lock covering its attributes", name)
		}
	}

	// A recall drops it all and has the kernel drop what it held.
	c.revoke([]uint64{testDir})
	if _, _, ok := c.lookup(testDir, "f"); ok {
		t.Fatal("answered after the recall")
	}
	if _, ok := c.attr(fileF, api.Attr{}); ok {
		t.Fatal("attributes kept after the recall")
	}
	got := drops.get()
	if len(got) != 1 || got[0].dir != testDir {
		t.Fatalf("kernel told to drop %+v, want testDir's", got)
	}
	d := got[0]
	slices.Sort(d.names)
	if !slices.Equal(d.names, []string{"f", "h", "sub"}) || !slices.Contains(d.inos, fileF) || !slices.Contains(d.inos, testDir) {
		t.Fatalf("kernel told to drop names %v inodes %v", d.names, d.inos)
	}
}

// TestNSCacheAttrMissAsksForTheLock: after a recall, asking for a file's
// attributes (as the kernel does before each read(2) of a file no lock
// covers) asks for its directory's lock again, once the recall's back-off
// is over, and the attributes are then answered under it.
func TestNSCacheAttrMissAsksForTheLock(t *testing.T) {
	c, _, _ := newTestCache(t)
	holdDir(t, c)
	c.revoke([]uint64{testDir})
	had := fileAttr(fileF, testDir)
	if _, ok := c.attr(fileF, had); ok {
		t.Fatal("attributes answered after the recall")
	}
	waitUntil(t, "the directory's lock asked for and held again", func() bool {
		c.attr(fileF, had)
		return c.lockState(testDir) == "held"
	})
	seq := c.begin()
	c.learnAttr(seq, had)
	if in, ok := c.attr(fileF, had); !ok || in.attr.Ino != fileF {
		t.Fatalf("attributes not answered under the lock taken again: %+v %v", in.attr, ok)
	}
}

// TestNSCacheLearnsListings: a page of a listing read under the lock
// answers lookups of its names after (READDIRPLUS then stat, as ls -l
// does); one read before a recall does not.
func TestNSCacheLearnsListings(t *testing.T) {
	c, _, _ := newTestCache(t)
	holdDir(t, c)
	page := []api.DirEntry{{Name: "listed", Attr: fileAttr(40, testDir)}}
	c.learnListing(c.begin(), testDir, page)
	if r, absent, ok := c.lookup(testDir, "listed"); !ok || absent || r.Attr.Ino != 40 {
		t.Fatalf("lookup of a listed name: %+v absent %v ok %v", r, absent, ok)
	}
	if in, ok := c.attr(40, api.Attr{}); !ok || in.attr.Ino != 40 {
		t.Fatal("a listed file's attributes not cached")
	}
	seq := c.begin()
	c.revoke([]uint64{testDir})
	holdDir(t, c)
	c.learnListing(seq, testDir, []api.DirEntry{{Name: "old", Attr: fileAttr(41, testDir)}})
	if _, absent, ok := c.lookup(testDir, "old"); !ok || !absent {
		t.Fatal("a page read before the recall was cached")
	}
}

func TestNSCacheIgnoresRepliesOlderThanAChange(t *testing.T) {
	c, _, _ := newTestCache(t)
	holdDir(t, c)
	// A lookup is sent, this mount then creates the name, and the lookup's
	// reply (which found nothing) arrives last: it must not be cached.
	seq := c.begin()
	c.added(testDir, "new", api.EntryResp{Attr: fileAttr(20, testDir)})
	c.learnAbsent(seq, testDir, "new")
	if r, absent, ok := c.lookup(testDir, "new"); !ok || absent || r.Attr.Ino != 20 {
		t.Fatalf("after create then a stale reply: %+v absent %v ok %v", r, absent, ok)
	}
	// Likewise a stale getattr after this mount's setattr.
	seq = c.begin()
	newer := fileAttr(fileF, testDir)
	newer.Mode = api.ModeReg | 0o600
	c.changedAttr(newer)
	c.learnAttr(seq, fileAttr(fileF, testDir))
	if in, ok := c.attr(fileF, api.Attr{}); !ok || in.attr.Mode != newer.Mode {
		t.Fatalf("after setattr then a stale reply: %+v %v", in.attr, ok)
	}
	// And anything sent before a recall.
	seq = c.begin()
	c.revoke([]uint64{testDir})
	holdDir(t, c)
	c.learn(seq, testDir, "old", api.EntryResp{Attr: fileAttr(21, testDir)})
	if _, absent, ok := c.lookup(testDir, "old"); !ok || !absent {
		t.Fatal("a reply sent before the recall was cached")
	}
}

func TestNSCacheLeaseAndLoss(t *testing.T) {
	c, locks, drops := newTestCache(t)
	holdDir(t, c)
	locks.mu.Lock()
	locks.valid = false // the lease lapsed
	locks.mu.Unlock()
	if _, _, ok := c.lookup(testDir, "f"); ok {
		t.Fatal("answered with the lease lapsed")
	}
	locks.mu.Lock()
	locks.valid = true
	locks.mu.Unlock()
	c.lost()
	if _, _, ok := c.lookup(testDir, "f"); ok {
		t.Fatal("answered after every lock was lost")
	}
	waitUntil(t, "the kernel told to drop the one directory after the loss", func() bool { return len(drops.get()) == 1 })
}

func TestNSCacheRemovedDirectoryGivesItsLockBack(t *testing.T) {
	c, locks, _ := newTestCache(t)
	holdDir(t, c)
	// This mount takes subDir's lock, then removes the directory.
	c.mu.Lock()
	c.wantLocked(subDir)
	c.mu.Unlock()
	waitUntil(t, "subDir's lock held", func() bool { return c.lockState(subDir) == "held" })
	c.removed(testDir, "sub", subDir, nil)
	if _, absent, ok := c.lookup(testDir, "sub"); !ok || !absent {
		t.Fatal("a removed name is not known absent")
	}
	waitUntil(t, "the removed directory's lock given back", func() bool {
		locks.mu.Lock()
		defer locks.mu.Unlock()
		return slices.Contains(locks.cancelled, subDir)
	})
}

// TestNSCachePrimingKeepsChangesMadeMeanwhile: a directory's listing that
// comes back after this mount created and removed names in it (a busy
// writer in a new directory) still makes the directory complete, with those
// changes applied over the older listing.
func TestNSCachePrimingKeepsChangesMadeMeanwhile(t *testing.T) {
	c, _, _ := newTestCache(t)
	list := c.list
	release := make(chan struct{})
	listing := make(chan struct{}, 1)
	c.list = func(ctx context.Context, dir uint64, limit int) (api.ReadDirResp, error) {
		listing <- struct{}{}
		<-release
		return list(ctx, dir, limit)
	}
	c.lookup(testDir, "x") // asks for the lock; the grant starts the listing
	<-listing
	c.added(testDir, "new", api.EntryResp{Attr: fileAttr(30, testDir)})
	c.removed(testDir, "f", fileF, nil)
	close(release)

	waitUntil(t, "the directory to become complete", func() bool {
		_, absent, ok := c.lookup(testDir, "zzz")
		return ok && absent
	})
	if r, absent, ok := c.lookup(testDir, "new"); !ok || absent || r.Attr.Ino != 30 {
		t.Fatalf("a name created while listing: %+v absent %v ok %v", r, absent, ok)
	}
	if _, absent, ok := c.lookup(testDir, "f"); !ok || !absent {
		t.Fatal("a name removed while listing came back from the older listing")
	}
	if _, ok := c.attr(fileF, api.Attr{}); ok {
		t.Fatal("the removed file's attributes came back from the older listing")
	}
}

// Past its bound on directory records the cache forgets directories: their
// locks go back, the kernel drops what they covered, and what was learnt
// before is not trusted after.
func TestNSCacheForgetsDirectoriesPastItsBound(t *testing.T) {
	c, locks, rec := newTestCache(t)
	holdDir(t, c)
	if _, _, ok := c.lookup(testDir, "f"); !ok {
		t.Fatal("f not answered under the held lock")
	}
	c.mu.Lock()
	c.maxDirs = 2 // so that every record goes
	c.mu.Unlock()
	before := time.Now()
	s := c.begin()
	for d := uint64(100); d < 103; d++ {
		c.mu.Lock()
		c.touchLocked(d) // a change this mount made in d
		c.unlock(0)
	}
	c.mu.Lock()
	left, kept := len(c.dirs), c.dirs[testDir] != nil
	c.mu.Unlock()
	if left > 2 || kept {
		t.Fatalf("%d directory records left (testDir's among them: %v), want at most 2, not testDir's", left, kept)
	}
	waitUntil(t, "testDir's lock given back", func() bool {
		locks.mu.Lock()
		defer locks.mu.Unlock()
		return slices.Contains(locks.cancelled, testDir)
	})
	waitUntil(t, "the kernel told to drop f", func() bool {
		for _, d := range rec.get() {
			if d.dir == testDir && slices.Contains(d.names, "f") {
				return true
			}
		}
		return false
	})
	if !c.recalledSince(testDir, before) {
		t.Error("attributes taken before the directory was forgotten are still trusted")
	}
	c.mu.Lock()
	stale := c.staleLocked(testDir, s)
	c.mu.Unlock()
	if !stale {
		t.Error("a reply to a request sent before the directory was forgotten is not suspect")
	}
	c.mu.Lock()
	c.maxDirs = maxCachedDirs
	c.mu.Unlock()
	if _, _, ok := c.lookup(testDir, "f"); ok {
		t.Error("f answered from the cache of a forgotten directory")
	}
	// The next miss asks for the lock again, and the cache serves again.
	waitUntil(t, "f answered again under a new lock", func() bool {
		_, _, ok := c.lookup(testDir, "f")
		return ok
	})
}
