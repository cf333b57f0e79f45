package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stria/stria/api"
)

// Namespace cache: names and attributes this mount learnt from meta, kept
// for as long as it holds the lock of the directory that covers them
// (api/lock.go). A directory's lock covers its entries, its own attributes
// and those of the non-directories whose only link it holds; meta recalls
// it before any other client changes them, so an answer from here is as
// current as one from meta. Lookups and getattrs it answers cost no round
// trip; a directory known complete answers "no such name" too, which spares
// every create its negative lookup.
//
// The kernel keeps a copy too. What this cache answers under a lock, the
// kernel may keep for as long as the lock is sure to be trusted (ttl); when
// a lock is recalled or given back, the kernel is told to drop what it
// covered (invalidate) before the recall is answered, or shortly after if
// the kernel is busy: a FUSE request of this mount holding the directory
// may itself be waiting for another mount's recall, and waiting for it here
// could close a circle.
type nsCache struct {
	locks lockClient
	log   *slog.Logger
	// maxTTL bounds how long the kernel keeps what a held lock covers
	// (Config.LockedTimeout; the lease bounds it too).
	maxTTL time.Duration
	// maxDirs bounds the directory records (maxCachedDirs).
	maxDirs int
	// list reads a directory's first page for priming (meta readdir).
	list func(ctx context.Context, dir uint64, limit int) (api.ReadDirResp, error)
	// invalidate has the kernel drop names and attributes (it may block:
	// see unlock). nil in unit tests.
	invalidate func([]dropped)

	mu sync.Mutex
	// seq counts events that make replies to earlier requests suspect:
	// this mount's own changes, recalls, grants, loss of every lock. Each
	// directory records the last that touched what its lock covers
	// (dirCache.changed); a reply to a request sent at seq s is cached
	// only where nothing changed after s.
	seq    uint64
	lostAt uint64
	// lostTime is when every lock was last lost (see recalledSince).
	lostTime time.Time
	// forgotAt and forgotTime stand in for the records forgetDirsLocked
	// dropped: for a directory with no record, a reply to a request sent
	// before is suspect, and so are attributes taken before.
	forgotAt   uint64
	forgotTime time.Time
	dirs       map[uint64]*dirCache
	attrs      map[uint64]cachedInode
	entries    int // names held over all directories
	// pending is what dropped locks covered, for the kernel to drop too;
	// taken by unlock.
	pending []dropped
}

// dropped is what one directory's lock covered: its names, and the inodes
// whose attributes it covered (the directory's own among them).
type dropped struct {
	dir   uint64
	names []string
	inos  []uint64
}

// Lock states of a directory.
const (
	unlocked = iota
	asking
	held
)

type dirCache struct {
	state   int
	gen     uint64 // moves on every recall: a grant asked for before it is void
	changed uint64 // seq of the last event touching what the lock covers
	// names maps a name to its inode, 0 for a name known absent.
	names map[string]uint64
	// complete: every name is in names, so a missing one is absent.
	complete bool
	// covered are the inodes in attrs this directory's lock covers.
	covered    map[uint64]struct{}
	recalledAt time.Time
	// priming: the directory is being read whole (prime); replay keeps
	// the names learnt meanwhile, newer than the listing.
	priming bool
	replay  []nameChange
}

type nameChange struct {
	name string
	ino  uint64
}

type cachedInode struct {
	attr   api.Attr
	layout *api.Layout
}

const (
	// kernelInvalWait is how long a recall waits for the kernel to drop
	// what the lock covered before it is answered anyway.
	kernelInvalWait = 20 * time.Millisecond
	// maxCachedNames bounds the names (and so attributes) cached per
	// mount; past it whole directories are dropped and their locks given
	// back.
	maxCachedNames = 1 << 20
	// maxCachedDirs bounds the directories the cache keeps a record of,
	// and so the locks the mount holds: a walk of millions of directories
	// (most of them holding few names) must not grow either for ever.
	maxCachedDirs = 1 << 16
	// primeLimit is the largest directory read whole when its lock is
	// granted, to know it complete.
	primeLimit = 1024
	// recallBackoff is how long after a recall a directory's lock is not
	// asked for again: two clients changing one directory would otherwise
	// pass its lock back and forth on every change.
	recallBackoff = 100 * time.Millisecond
)

// lockClient is what the cache needs of the mount's lock session
// (api.LockSession).
type lockClient interface {
	Valid() bool
	ValidFor() time.Duration
	Enqueue(ctx context.Context, dirs []uint64) (bool, error)
	Cancel(ctx context.Context, dirs []uint64) error
}

func newNSCache(locks lockClient, maxTTL time.Duration, log *slog.Logger) *nsCache {
	return &nsCache{locks: locks, maxTTL: maxTTL, maxDirs: maxCachedDirs, log: log, dirs: map[uint64]*dirCache{}, attrs: map[uint64]cachedInode{}}
}

// begin returns the sequence number to pass to learn calls for a request
// sent now.
func (c *nsCache) begin() uint64 {
	c.mu.Lock()
	defer c.unlock(0)
	return c.seq
}

// touchLocked records an event touching what d's lock covers. Called with mu.
func (c *nsCache) touchLocked(d uint64) {
	c.seq++
	c.dir(d).changed = c.seq
}

// staleLocked reports whether what d's lock covers may have changed since a
// request sent at seq s. Called with mu.
func (c *nsCache) staleLocked(d, s uint64) bool {
	if c.lostAt > s {
		return true
	}
	dc := c.dirs[d]
	if dc == nil {
		return c.forgotAt > s
	}
	return dc.changed > s
}

// dir returns d's cache entry, making it. Called with mu.
func (c *nsCache) dir(d uint64) *dirCache {
	dc := c.dirs[d]
	if dc == nil {
		dc = &dirCache{}
		c.dirs[d] = dc
	}
	return dc
}

// heldLocked returns d's cache if its lock is held and trusted. Called with mu.
func (c *nsCache) heldLocked(d uint64) *dirCache {
	dc := c.dirs[d]
	if dc == nil || dc.state != held || !c.locks.Valid() {
		return nil
	}
	return dc
}

// lookup answers from the cache: the entry, or absent; ok is false when the
// cache cannot tell (and the directory's lock is asked for, if need be).
func (c *nsCache) lookup(dir uint64, name string) (r api.EntryResp, absent, ok bool) {
	c.mu.Lock()
	defer c.unlock(0)
	dc := c.heldLocked(dir)
	if dc == nil {
		c.wantLocked(dir)
		return r, false, false
	}
	ino, known := dc.names[name]
	switch {
	case known && ino == 0, !known && dc.complete:
		return r, true, true
	case !known:
		return r, false, false
	}
	in, ok := c.attrLocked(ino)
	if !ok {
		return r, false, false
	}
	return api.EntryResp{Attr: in.attr, Layout: in.layout}, false, true
}

// attr returns an inode's cached attributes (and layout, for a file). On a
// miss it asks for the lock that would cover them, had is what the caller
// knows of them: the kernel asks for the attributes of a file it reads
// before every read(2) while no lock covers them, and without the lock
// each of those is a round trip to meta.
func (c *nsCache) attr(ino uint64, had api.Attr) (cachedInode, bool) {
	c.mu.Lock()
	defer c.unlock(0)
	in, ok := c.attrLocked(ino)
	if !ok && had.Ino == ino {
		c.wantLocked(coverOf(had))
	}
	return in, ok
}

func (c *nsCache) attrLocked(ino uint64) (cachedInode, bool) {
	in, ok := c.attrs[ino]
	if !ok || c.heldLocked(coverOf(in.attr)) == nil {
		return cachedInode{}, false
	}
	return in, true
}

// coverOf is the directory whose lock covers an inode's attributes.
func coverOf(a api.Attr) uint64 {
	if a.IsDir() {
		return a.Ino
	}
	return a.Parent
}

// learn caches what a lookup sent at seq s found.
func (c *nsCache) learn(s, dir uint64, name string, r api.EntryResp) {
	c.mu.Lock()
	defer c.unlock(0)
	c.learnLocked(s, dir, name, r.Attr, r.Layout)
}

// learnLocked caches a name and its attributes learnt from a request sent
// at seq s, each unless something changed what covers it since. Called
// with mu.
func (c *nsCache) learnLocked(s, dir uint64, name string, a api.Attr, layout *api.Layout) {
	if !c.staleLocked(dir, s) {
		c.putNameLocked(dir, name, a.Ino)
	}
	if !c.staleLocked(coverOf(a), s) {
		c.putAttrLocked(a, layout)
	}
}

// learnListing caches what a page of dir's listing, read by a request sent
// at seq s, holds: its names and their attributes, as learn does for one.
// The kernel may then keep what a listing with attributes (READDIRPLUS)
// gave it for as long as the lock is held, as it does a lookup's.
func (c *nsCache) learnListing(s, dir uint64, entries []api.DirEntry) {
	c.mu.Lock()
	defer c.unlock(0)
	if c.heldLocked(dir) == nil {
		c.wantLocked(dir)
		return
	}
	for _, e := range entries {
		c.learnLocked(s, dir, e.Name, e.Attr, nil)
	}
}

// learnAbsent caches that a lookup sent at seq s found no such name.
func (c *nsCache) learnAbsent(s, dir uint64, name string) {
	c.mu.Lock()
	defer c.unlock(0)
	if !c.staleLocked(dir, s) {
		c.putNameLocked(dir, name, 0)
	}
}

// learnAttr caches attributes a getattr sent at seq s returned.
func (c *nsCache) learnAttr(s uint64, a api.Attr) {
	c.mu.Lock()
	defer c.unlock(0)
	if !c.staleLocked(coverOf(a), s) {
		c.putAttrLocked(a, nil)
	}
}

func (c *nsCache) putNameLocked(dir uint64, name string, ino uint64) {
	dc := c.heldLocked(dir)
	if dc == nil {
		return
	}
	if dc.priming {
		dc.replay = append(dc.replay, nameChange{name, ino})
	}
	_, had := dc.names[name]
	if ino == 0 && dc.complete {
		// Absent is what a complete directory says of a missing name.
		if had {
			delete(dc.names, name)
			c.entries--
		}
		return
	}
	if !had {
		if c.entries >= maxCachedNames {
			c.shrinkLocked()
			if dc.state != held {
				return // it dropped this directory too
			}
		}
		c.entries++
	}
	dc.names[name] = ino
}

// putAttrLocked caches attributes under the lock covering them, if held;
// layout nil keeps a cached one.
func (c *nsCache) putAttrLocked(a api.Attr, layout *api.Layout) {
	cover := coverOf(a)
	dc := c.heldLocked(cover)
	if dc == nil {
		delete(c.attrs, a.Ino)
		return
	}
	if layout == nil {
		layout = c.attrs[a.Ino].layout
	}
	c.attrs[a.Ino] = cachedInode{attr: a, layout: layout}
	dc.covered[a.Ino] = struct{}{}
}

// Changes this mount made, from meta's replies. Each touches the
// directories whose covered state it altered.

// added records a name this mount created or linked in dir, from meta's
// reply (which carries the directory's attributes after the change).
func (c *nsCache) added(dir uint64, name string, r api.EntryResp) {
	c.mu.Lock()
	defer c.unlock(0)
	c.touchLocked(dir)
	if in, ok := c.attrs[r.Attr.Ino]; ok && coverOf(in.attr) != coverOf(r.Attr) {
		c.touchLocked(coverOf(in.attr)) // a new hard link: uncovered now
		delete(c.attrs, r.Attr.Ino)
	}
	c.putNameLocked(dir, name, r.Attr.Ino)
	c.putAttrLocked(r.Attr, r.Layout)
	if r.Parent != nil {
		c.putAttrLocked(*r.Parent, nil)
	}
}

// removed records that this mount removed name (inode ino) from dir.
func (c *nsCache) removed(dir uint64, name string, ino uint64, parent *api.Attr) {
	c.mu.Lock()
	defer c.unlock(0)
	c.touchLocked(dir)
	c.putNameLocked(dir, name, 0)
	c.forgetAttrLocked(ino) // its link count and ctime changed
	if parent != nil {
		c.putAttrLocked(*parent, nil)
	} else {
		delete(c.attrs, dir)
	}
	if dc := c.dirs[ino]; dc != nil && dc.state != unlocked {
		// A removed directory: nothing left to cover.
		c.dropLocked(ino, dc)
		c.giveBackLocked([]uint64{ino})
	}
}

// renamed records a rename this mount made of inode src, replacing or
// exchanging with dst (0: none, or not known).
func (c *nsCache) renamed(dir uint64, name string, newDir uint64, newName string, src, dst uint64, exchange bool) {
	c.mu.Lock()
	defer c.unlock(0)
	c.touchLocked(dir)
	c.touchLocked(newDir)
	delete(c.attrs, dir) // mtimes
	delete(c.attrs, newDir)
	c.forgetAttrLocked(src) // ctime, perhaps its covering directory
	c.forgetAttrLocked(dst) // replaced: links; exchanged: ctime
	switch {
	case src == 0 || exchange && dst == 0:
		c.forgetNamesLocked(dir)
		c.forgetNamesLocked(newDir)
	case exchange:
		c.putNameLocked(dir, name, dst)
		c.putNameLocked(newDir, newName, src)
	default:
		c.putNameLocked(dir, name, 0)
		c.putNameLocked(newDir, newName, src)
	}
}

// changedAttr records an inode's attributes after a change this mount made.
func (c *nsCache) changedAttr(a api.Attr) {
	c.mu.Lock()
	defer c.unlock(0)
	c.touchLocked(coverOf(a))
	c.putAttrLocked(a, nil)
}

// forgetAttr drops an inode's attributes after a change this mount made
// that meta's reply does not carry (xattrs: ctime), or whose outcome it
// does not know.
func (c *nsCache) forgetAttr(ino uint64) {
	c.mu.Lock()
	defer c.unlock(0)
	c.forgetAttrLocked(ino)
}

func (c *nsCache) forgetAttrLocked(ino uint64) {
	if ino == 0 {
		return
	}
	if in, ok := c.attrs[ino]; ok {
		c.touchLocked(coverOf(in.attr))
		delete(c.attrs, ino)
	}
	if c.dirs[ino] != nil {
		c.touchLocked(ino) // a directory's own attributes
	}
}

// forgetNames drops what is known of dir's names after a change whose
// outcome this mount does not know (an error may have come after it was
// applied).
func (c *nsCache) forgetNames(dir uint64) {
	c.mu.Lock()
	defer c.unlock(0)
	c.touchLocked(dir)
	c.forgetNamesLocked(dir)
	delete(c.attrs, dir)
}

func (c *nsCache) forgetNamesLocked(dir uint64) {
	if dc := c.dirs[dir]; dc != nil {
		c.entries -= len(dc.names)
		dc.names = map[string]uint64{}
		dc.complete = false
		dc.priming, dc.replay = false, nil // the listing may be wrong too
	}
}

// recalledSince reports whether the lock of dir was recalled or given up
// after t: attributes a node took at t, which dir's lock covered, may be
// stale since.
func (c *nsCache) recalledSince(dir uint64, t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lostTime.After(t) {
		return true
	}
	dc := c.dirs[dir]
	if dc == nil {
		return c.forgotTime.After(t)
	}
	return dc.recalledAt.After(t)
}

// Locks.

// lockState names the state of dir's lock, for the stria.lock xattr.
func (c *nsCache) lockState(dir uint64) string {
	c.mu.Lock()
	defer c.unlock(0)
	switch dc := c.dirs[dir]; {
	case dc == nil || dc.state == unlocked:
		return "unlocked"
	case dc.state == asking:
		return "asking"
	case !c.locks.Valid():
		return "lapsed"
	}
	return "held"
}

// wantLocked asks for dir's lock in the background unless it is held, being
// asked for, or was recalled just now. Called with mu.
func (c *nsCache) wantLocked(dir uint64) {
	dc := c.dir(dir)
	if dc.state != unlocked || time.Since(dc.recalledAt) < recallBackoff || !c.locks.Valid() {
		return
	}
	dc.state = asking
	go c.enqueue(dir, dc.gen)
}

func (c *nsCache) enqueue(dir, gen uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	granted, err := c.locks.Enqueue(ctx, []uint64{dir})
	if err != nil {
		c.log.Debug("lock not granted", "dir", dir, "err", err)
	}
	c.mu.Lock()
	dc := c.dirs[dir]
	if dc == nil || dc.gen != gen || dc.state != asking {
		// Recalled, or everything lost, while the grant was on its way:
		// lockd took it back already.
		c.mu.Unlock()
		return
	}
	if !granted {
		dc.state = unlocked
		dc.recalledAt = time.Now() // back off before asking again
		c.mu.Unlock()
		return
	}
	dc.state = held
	dc.names = map[string]uint64{}
	dc.covered = map[uint64]struct{}{}
	dc.priming, dc.replay = true, nil
	// Replies to requests sent before now may predate changes other
	// clients made while this mount held no lock: none is cached.
	c.touchLocked(dir)
	s := c.seq
	c.mu.Unlock()
	c.prime(ctx, dir, gen, s)
}

// prime reads a small directory whole under its new lock, so that it is
// known complete (names absent from it need no lookup). While the lock is
// held only this mount changes the directory, and the names it learnt
// while the listing was on its way are newer than it: they are applied
// over it. Attributes from the listing are taken only if nothing changed.
func (c *nsCache) prime(ctx context.Context, dir, gen, s uint64) {
	r, err := c.list(ctx, dir, primeLimit)
	c.mu.Lock()
	defer c.unlock(0)
	dc := c.heldLocked(dir)
	if dc == nil || dc.gen != gen || !dc.priming || c.lostAt > s {
		if dc != nil && dc.gen == gen {
			dc.priming, dc.replay = false, nil
		}
		return
	}
	replay := dc.replay
	dc.priming, dc.replay = false, nil
	if err != nil || r.More {
		return
	}
	stale := c.staleLocked(dir, s)
	for _, e := range r.Entries {
		c.putNameLocked(dir, e.Name, e.Attr.Ino)
		if !stale && !c.staleLocked(coverOf(e.Attr), s) {
			c.putAttrLocked(e.Attr, nil)
		}
	}
	for _, ch := range replay {
		c.putNameLocked(dir, ch.name, ch.ino)
	}
	if dc.state == held {
		dc.complete = true
	}
}

// revoke drops what the recalled directories' locks covered.
func (c *nsCache) revoke(dirs []uint64) {
	c.mu.Lock()
	for _, d := range dirs {
		dc := c.dir(d)
		c.dropLocked(d, dc)
		c.touchLocked(d)
		dc.recalledAt = time.Now()
	}
	c.unlock(kernelInvalWait)
}

// unlock releases mu, then has the kernel drop what dropped locks covered,
// waiting up to wait for it. Past maxCachedDirs it forgets directories
// first: here, at the end of an operation, no caller holds a record.
func (c *nsCache) unlock(wait time.Duration) {
	if len(c.dirs) > c.maxDirs {
		c.forgetDirsLocked()
	}
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	if len(pending) == 0 || c.invalidate == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.invalidate(pending)
	}()
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		}
	}
}

// attrTTL is how long the kernel may keep an inode's attributes this mount
// answered: while the lock covering them is sure to be trusted (the lease),
// at most maxTTL; 0 when no held lock covers them (the kernel then
// keeps them for the mount's timeout).
func (c *nsCache) attrTTL(ino uint64) time.Duration {
	c.mu.Lock()
	defer c.unlock(0)
	if _, ok := c.attrLocked(ino); !ok {
		return 0
	}
	return c.kernelTTL()
}

// kernelTTL is how long the kernel may keep what a held lock covers, from
// now. Called with mu.
func (c *nsCache) kernelTTL() time.Duration {
	if c.maxTTL <= 0 {
		return 0
	}
	return min(c.locks.ValidFor(), c.maxTTL)
}

// entryTTLs sets how long the kernel keeps an entry this mount answered
// for name in dir, and the attributes in it, when locks cover them.
func (c *nsCache) entryTTLs(dir uint64, name string, out *fuse.EntryOut) {
	c.mu.Lock()
	defer c.unlock(0)
	valid := c.kernelTTL()
	if valid <= 0 {
		return
	}
	if dc := c.heldLocked(dir); dc != nil {
		if ino, ok := dc.names[name]; ok && ino == out.Ino {
			out.SetEntryTimeout(valid)
		}
	}
	if in, ok := c.attrLocked(out.Ino); ok && in.attr.Ino == out.Ino {
		out.SetAttrTimeout(valid)
	}
}

// lost drops everything: lockd evicted this mount or restarted.
func (c *nsCache) lost() {
	c.mu.Lock()
	defer c.unlock(0)
	c.seq++
	c.lostAt = c.seq
	c.lostTime = time.Now()
	for d, dc := range c.dirs {
		c.dropLocked(d, dc)
	}
	c.dirs = map[uint64]*dirCache{}
	c.attrs = map[uint64]cachedInode{}
	c.entries = 0
}

// dropLocked forgets a directory's cache; its lock is then not held (the
// caller gives it back if lockd still counts it). Called with mu.
func (c *nsCache) dropLocked(d uint64, dc *dirCache) {
	if dc.state == held {
		k := dropped{dir: d, inos: []uint64{d}}
		for name, ino := range dc.names {
			if ino != 0 {
				k.names = append(k.names, name)
			}
		}
		for ino := range dc.covered {
			k.inos = append(k.inos, ino)
		}
		c.pending = append(c.pending, k)
	}
	c.entries -= len(dc.names)
	for ino := range dc.covered {
		if in, ok := c.attrs[ino]; ok && coverOf(in.attr) == d {
			delete(c.attrs, ino)
		}
	}
	dc.names, dc.covered, dc.complete = nil, nil, false
	dc.priming, dc.replay = false, nil
	dc.state = unlocked
	dc.gen++
}

// shrinkLocked drops directories (random ones: map order) until the cache
// is a tenth under its bound, and gives their locks back.
func (c *nsCache) shrinkLocked() {
	var back []uint64
	for d, dc := range c.dirs {
		if c.entries < maxCachedNames*9/10 {
			break
		}
		if dc.state == held {
			c.dropLocked(d, dc)
			c.touchLocked(d)
			dc.recalledAt = time.Now()
			back = append(back, d)
		}
	}
	c.giveBackLocked(back)
}

// forgetDirsLocked drops the records of directories (random ones: map
// order), giving back the locks held, until a tenth under maxDirs.
// A directory whose lock is being asked for or read whole keeps its record:
// the grant or the listing will look for it. Called with mu.
func (c *nsCache) forgetDirsLocked() {
	var back []uint64
	for d, dc := range c.dirs {
		if len(c.dirs) < c.maxDirs*9/10 {
			break
		}
		if dc.state == asking || dc.priming {
			continue
		}
		if dc.state == held {
			c.dropLocked(d, dc)
			back = append(back, d)
		}
		delete(c.dirs, d)
	}
	c.seq++
	c.forgotAt = c.seq
	c.forgotTime = time.Now()
	c.giveBackLocked(back)
}

// giveBackLocked cancels locks this mount no longer uses, in the
// background. Called with mu.
func (c *nsCache) giveBackLocked(back []uint64) {
	if len(back) == 0 {
		return
	}
	go func() {
		for len(back) > 0 {
			n := min(len(back), api.MaxLockDirs)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := c.locks.Cancel(ctx, back[:n]); err != nil {
				c.log.Debug("giving locks back", "err", err)
			}
			cancel()
			back = back[n:]
		}
	}()
}
