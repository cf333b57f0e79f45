package meta

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/stria/stria/api"
)

// store is the namespace on Pebble.
//
// Group commit: every mutation runs its read-check-write phase under mu,
// builds one batch and applies it with NoSync while still holding mu, so the
// next mutation sees it. After releasing mu it makes the WAL durable with a
// synced empty log record: a sync of a later WAL record covers every earlier
// one, and Pebble's log writer folds concurrent sync requests into one fsync.
// Only then does the caller reply. Readers never take mu.
//
// Lock order: mu is the only lock held across store calls; nothing else is
// acquired while holding it except Pebble's own.
type store struct {
	db  *pebble.DB
	log *slog.Logger

	mu      sync.Mutex
	nextIno uint64 // guarded by mu
	nextSeq uint64 // guarded by mu
	// dirInodes holds the committed records of directories mutations read
	// or wrote, guarded by mu: every create and unlink reads its parent,
	// and a create each ancestor up to a default layout. fileInodes holds
	// those of other inodes, apart so that a churn of files does not push
	// the directories out: the file a create made is the one an unlink
	// (or a size update) soon reads.
	dirInodes, fileInodes inodeCache
	// names knows directories whole (names.go), guarded by mu.
	names  nameCache
	inodes atomic.Uint64
	fsid   string

	// Durability tracking. commits counts applied batches and committedSeq
	// is the last changelog seq applied (both may not be durable yet);
	// durableCommits and durableSeq are what a finished WAL sync covers.
	// The publisher reads the outbox only up to durableSeq.
	commits        atomic.Uint64
	committedSeq   atomic.Uint64
	durableCommits atomic.Uint64
	durableSeq     atomic.Uint64

	failed atomic.Pointer[error]
	// onFail is called once when the store can no longer guarantee durability.
	onFail func(error)

	// Counters for tests and logs: WAL syncs requested, and replies that
	// needed none because another sync already covered them.
	syncCalls   atomic.Uint64
	syncCovered atomic.Uint64
}

// openStore opens (creating if needed) the store in dir and makes sure the
// root directory exists.
func openStore(dir string, fs vfs.FS, log *slog.Logger) (*store, error) {
	plog := &pebbleLogger{log: log}
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref()
	opts := &pebble.Options{
		Logger:             plog,
		FormatMajorVersion: pebble.FormatNewest,
		Cache:              cache,
		MemTableSize:       memTableSize,
	}
	// Bloom filters: most point reads on a hot path look for a name that
	// does not exist yet (create, rename targets).
	opts.Levels[0].FilterPolicy = bloom.FilterPolicy(10)
	if fs != nil {
		opts.FS = fs
	}
	db, err := pebble.Open(filepath.Join(dir, "meta"), opts)
	if err != nil {
		return nil, fmt.Errorf("opening metadata store: %w", err)
	}
	s := &store{db: db, log: log, names: newNameCache(maxCachedNames),
		dirInodes: newInodeCache(maxCachedInodes), fileInodes: newInodeCache(maxCachedInodes)}
	plog.st.Store(s)
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *store) close() error { return s.db.Close() }

// inoGapAfterCrash is how many inode numbers are skipped after a crash.
// Changes reply before they are durable, but at most maxUnsyncedCommits of
// them wait for a WAL sync at once, each allocating a few numbers.
const inoGapAfterCrash = 1 << 24

// markClean records a clean stop: every change is durable (the caller
// synced), so the next open need not skip inode numbers.
func (s *store) markClean() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return s.db.Set(keyClean, []byte{1}, pebble.Sync)
}

func (s *store) load() error {
	format, err := s.getMeta(keyFormat)
	if err != nil {
		return err
	}
	if format == nil {
		return s.initialise()
	}
	b := s.db.NewBatch()
	defer b.Close()
	switch v := u64(format); v {
	case storeFormat:
		c, err := s.getMeta(keyCounters)
		if err != nil {
			return err
		}
		if len(c) != 24 {
			return api.Errorf(api.CodeCorrupt, "meta counters of %d bytes", len(c))
		}
		s.nextIno, s.nextSeq = u64(c[:8]), u64(c[8:16])
		s.inodes.Store(u64(c[16:]))
	case 1:
		var c [3]uint64
		for i, k := range keyFormat1Counters {
			val, err := s.getMeta(k)
			if err != nil {
				return err
			}
			if len(val) != 8 && i < 2 { // an old store may lack inodes
				return api.Errorf(api.CodeCorrupt, "meta key %s missing", k)
			}
			c[i] = u64(val)
			b.Delete(k, nil)
		}
		s.nextIno, s.nextSeq = c[0], c[1]
		s.inodes.Store(c[2])
		b.Set(keyFormat, putU64(storeFormat), nil)
		s.log.Info("metadata store converted", "from_format", v, "to_format", storeFormat)
	default:
		return fmt.Errorf("metadata store format %d, this build reads %d (and converts 1)", v, storeFormat)
	}
	id, err := s.getMeta(keyFSID)
	if err != nil {
		return err
	}
	s.fsid = string(id)
	clean, err := s.getMeta(keyClean)
	if err != nil {
		return err
	}
	if clean == nil {
		// A crash may have lost changes whose inode numbers (and object
		// ids, from the same space) were already handed out, and objects
		// written under them on the OSTs: never hand those out again.
		s.log.Warn("metadata store was not closed cleanly: skipping inode numbers a lost change may have used", "from", s.nextIno, "skipped", inoGapAfterCrash)
		s.nextIno += inoGapAfterCrash
	}
	b.Set(keyCounters, counters(s.nextIno, s.nextSeq, s.inodes.Load()), nil)
	b.Delete(keyClean, nil) // until the next clean stop
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("opening metadata store: %w", err)
	}
	// Whatever the WAL replay brought back is on disk now: make it durable
	// before the publisher may treat it as such.
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("syncing metadata store: %w", err)
	}
	s.committedSeq.Store(s.nextSeq - 1)
	s.durableSeq.Store(s.nextSeq - 1)
	if _, err := s.getInode(s.db, api.RootIno); err != nil {
		return fmt.Errorf("reading root inode: %w", err)
	}
	return nil
}

func (s *store) initialise() error {
	var id [16]byte
	rand.Read(id[:])
	s.fsid = hex.EncodeToString(id[:])
	now := time.Now().UnixNano()
	root := &inode{
		Attr: api.Attr{
			Ino: api.RootIno, Mode: api.ModeDir | 0o755, Nlink: 2,
			Size: dirSize, Atime: now, Mtime: now, Ctime: now, Parent: api.RootIno,
		},
	}
	b := s.db.NewBatch()
	defer b.Close()
	b.Set(inodeKey(api.RootIno), encodeInode(root), nil)
	b.Set(keyCounters, counters(api.RootIno+1, 1, 1), nil)
	b.Set(keyFSID, []byte(s.fsid), nil)
	b.Set(keyFormat, putU64(storeFormat), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("creating root: %w", err)
	}
	s.nextIno, s.nextSeq = api.RootIno+1, 1
	s.inodes.Store(1)
	s.log.Info("created a new file system", "fsid", s.fsid)
	return nil
}

// cacheSize is Pebble's block cache.
const cacheSize = 128 << 20

// memTableSize is the size of Pebble's memtables (its default is 4 MiB).
// With file data kept here (dom.go) every small file adds a few KiB, and
// a 4 MiB memtable fills every thousand files: each flush is an L0 table
// to compact, on the disk the OSTs use, and the files just written, the
// ones most likely read next, are read back from it. 64 MiB is RocksDB's
// and CockroachDB's choice.
const memTableSize = 64 << 20

// dirSize is st_size reported for directories.
const dirSize = 4096

func (s *store) getMeta(k []byte) ([]byte, error) { return get(s.db, k) }

// get returns a copy of k's value, nil if absent.
func get(r pebble.Reader, k []byte) ([]byte, error) {
	v, closer, err := r.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading store: %w", err)
	}
	out := append(make([]byte, 0, len(v)), v...)
	closer.Close()
	return out, nil
}

func (s *store) getInode(r pebble.Reader, ino uint64) (*inode, error) {
	v, err := inodeRecord(r, ino)
	if err != nil {
		return nil, err
	}
	return decodeInode(v)
}

// inodeRecord returns ino's encoded record; CodeNotFound if it has none.
func inodeRecord(r pebble.Reader, ino uint64) ([]byte, error) {
	v, err := get(r, inodeKey(ino))
	if err == nil && v == nil {
		err = api.Errorf(api.CodeNotFound, "inode %d does not exist", ino)
	}
	return v, err
}

func (s *store) getDent(r pebble.Reader, parent uint64, name string) (dent, bool, error) {
	v, err := get(r, dentKey(parent, name))
	if err != nil || v == nil {
		return dent{}, false, err
	}
	d, err := decodeDent(v)
	return d, err == nil, err
}

// syncWAL makes every mutation applied so far durable.
func (s *store) syncWAL() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	// What is applied now is covered by the sync below.
	commits, seq := s.commits.Load(), s.committedSeq.Load()
	s.syncCalls.Add(1)
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		err = api.Errorf(api.CodeIO, "metadata store cannot sync: %v", err)
		s.fail(err)
		return err
	}
	raise(&s.durableCommits, commits)
	raise(&s.durableSeq, seq)
	return nil
}

// raise sets a to max(a, v).
func raise(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// waitDurable returns once the commit numbered upTo is durable.
func (s *store) waitDurable(upTo uint64) error {
	if s.durableCommits.Load() >= upTo {
		s.syncCovered.Add(1)
		if p := s.failed.Load(); p != nil {
			return *p
		}
		return nil
	}
	return s.syncWAL()
}

func (s *store) fail(err error) {
	if s.failed.CompareAndSwap(nil, &err) {
		s.log.Error("metadata store failed; refusing further changes", "err", err)
		if s.onFail != nil {
			s.onFail(err)
		}
	}
}

// applyUnsynced runs fn as one atomic change that every later read and
// mutation sees, and returns before it is durable: the next WAL sync
// (syncWAL, or waitDurable for this or a later commit) covers it. fn checks
// every precondition before it writes; if it returns an error nothing is
// written.
func (s *store) applyUnsynced(fn func(t *txn) error) (*txn, error) {
	if p := s.failed.Load(); p != nil {
		return nil, *p
	}
	return s.apply(fn)
}

// apply runs the locked phase of applyUnsynced.
func (s *store) apply(fn func(t *txn) error) (*txn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &txn{
		s:       s,
		b:       s.db.NewBatch(),
		now:     time.Now().UnixNano(),
		nextIno: s.nextIno,
		nextSeq: s.nextSeq,
		cache:   map[uint64]*inode{},
		dirty:   map[uint64]bool{},
		orig:    map[uint64]uint64{},
		fresh:   map[uint64]bool{},
	}
	defer t.b.Close()
	if err := fn(t); err != nil {
		return t, err
	}
	if err := t.flush(); err != nil {
		return t, err
	}
	if t.b.Empty() {
		t.commit = s.commits.Load()
		return t, nil
	}
	if err := s.db.Apply(t.b, pebble.NoSync); err != nil {
		return t, fmt.Errorf("applying change: %w", err)
	}
	for _, w := range t.inodeWrites {
		s.cacheInode(w)
	}
	s.names.applied(t.dirsMade, t.dirsGone, t.nameChanges)
	t.wrote = true
	s.nextIno, s.nextSeq = t.nextIno, t.nextSeq
	s.inodes.Add(uint64(t.inodeDelta))
	s.committedSeq.Store(s.nextSeq - 1)
	t.commit = s.commits.Add(1)
	return t, nil
}

// txn is one mutation being built under store.mu. Reads see the committed
// state (never the batch), so a mutation reads everything it needs before it
// writes; inodes are cached so one inode changed twice stays consistent.
type txn struct {
	s          *store
	b          *pebble.Batch
	now        int64
	nextIno    uint64
	nextSeq    uint64
	inodeDelta int64
	cache      map[uint64]*inode
	dirty      map[uint64]bool    // true: write; false: delete
	queued     []api.StripeObject // objects added to the destroy queue
	wrote      bool
	commit     uint64 // commit number this reply depends on

	// Lock coverage (api/lock.go): the directories whose locks cover what
	// this change alters, and those the caller holds a change barrier on
	// (nil: not checked). orig is each inode's covering directory as read,
	// fresh the inodes this change creates (no client can hold their locks).
	covered map[uint64]struct{}
	allowed map[uint64]struct{}
	orig    map[uint64]uint64
	fresh   map[uint64]bool
	// inodeWrites are the inode records this change writes (v nil:
	// deleted), for store.dirInodes and fileInodes.
	inodeWrites []inodeWrite
	// For store.names: the directories this change makes and removes,
	// and the entries it sets and deletes.
	dirsMade, dirsGone []uint64
	nameChanges        []nameChange
}

// coverOf is the directory whose lock covers an inode's attributes: a
// directory's own, a non-directory's only parent (0: none, never cached).
func coverOf(in *inode) uint64 {
	if in.isDir() {
		return in.Ino
	}
	return in.Parent
}

// cover notes that the change alters what directory d's lock covers.
func (t *txn) cover(d uint64) {
	if d == 0 || t.fresh[d] {
		return
	}
	if t.covered == nil {
		t.covered = map[uint64]struct{}{}
	}
	t.covered[d] = struct{}{}
}

// needLocks is returned by a change that alters what directories outside
// its change barrier cover: nothing was written; take them too and retry.
type needLocks struct{ dirs []uint64 }

func (e *needLocks) Error() string {
	return fmt.Sprintf("change needs locks on directories %v too", e.dirs)
}

// checkCovered refuses a change that alters what a directory outside the
// caller's change barrier covers.
func (t *txn) checkCovered() error {
	if t.allowed == nil {
		return nil
	}
	var missing []uint64
	for d := range t.covered {
		if _, ok := t.allowed[d]; !ok {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		return &needLocks{dirs: missing}
	}
	return nil
}

// get returns the inode, from this transaction's cache or the store.
func (t *txn) get(ino uint64) (*inode, error) {
	if ino == 0 {
		return nil, api.Errorf(api.CodeInvalid, "inode number 0")
	}
	if in, ok := t.cache[ino]; ok {
		if in == nil {
			return nil, api.Errorf(api.CodeNotFound, "inode %d does not exist", ino)
		}
		return in, nil
	}
	v, cached := t.s.dirInodes.m[ino]
	if !cached {
		v, cached = t.s.fileInodes.m[ino]
	}
	if !cached {
		var err error
		if v, err = inodeRecord(t.s.db, ino); err != nil {
			return nil, err
		}
	}
	in, err := decodeInode(v)
	if err != nil {
		return nil, err
	}
	if !cached {
		t.s.cacheInode(inodeWrite{ino: ino, v: v, dir: in.isDir()})
	}
	t.cache[ino] = in
	t.orig[ino] = coverOf(in)
	return in, nil
}

// maxCachedInodes bounds store.dirInodes and store.fileInodes each.
const maxCachedInodes = 1 << 16

// inodeCache holds committed inode records, at most limit of them: past
// it an eighth go, at random.
type inodeCache struct {
	m     map[uint64][]byte
	limit int
}

func newInodeCache(limit int) inodeCache {
	return inodeCache{m: map[uint64][]byte{}, limit: limit}
}

func (c *inodeCache) put(ino uint64, v []byte) {
	if len(c.m) >= c.limit {
		for k := range c.m {
			if len(c.m) < c.limit*7/8 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[ino] = v
}

// inodeWrite is an inode record a change writes (v nil: deletes).
type inodeWrite struct {
	ino uint64
	v   []byte
	dir bool
}

// cacheInode keeps a committed record, or forgets a deleted one. Called
// with mu.
func (s *store) cacheInode(w inodeWrite) {
	switch {
	case w.v == nil:
		delete(s.dirInodes.m, w.ino)
		delete(s.fileInodes.m, w.ino)
	case w.dir:
		s.dirInodes.put(w.ino, w.v)
	default:
		s.fileInodes.put(w.ino, w.v)
	}
}

// dir returns the inode, which must be a directory.
func (t *txn) dir(ino uint64) (*inode, error) {
	in, err := t.get(ino)
	if err != nil {
		return nil, err
	}
	if !in.isDir() {
		return nil, api.Errorf(api.CodeNotDir, "inode %d is not a directory", ino)
	}
	return in, nil
}

func (t *txn) dent(parent uint64, name string) (dent, bool, error) {
	if d, found, known := t.s.names.lookup(parent, name); known {
		return d, found, nil
	}
	return t.s.getDent(t.s.db, parent, name)
}

// writeInode puts in's record in the batch. Changes use put, which also
// checks what directory locks cover the change.
func (t *txn) writeInode(in *inode) {
	enc := encodeInode(in)
	t.b.Set(inodeKey(in.Ino), enc, nil)
	t.inodeWrites = append(t.inodeWrites, inodeWrite{ino: in.Ino, v: enc, dir: in.isDir()})
}

// put marks an inode (from get or newInode) to be written.
func (t *txn) put(in *inode) {
	t.cache[in.Ino] = in
	t.dirty[in.Ino] = true
}

// newInode allocates an inode number.
func (t *txn) newInode() *inode {
	in := &inode{Attr: api.Attr{Ino: t.nextIno}, NoXattrs: true}
	t.fresh[in.Ino] = true
	t.nextIno++
	t.inodeDelta++
	return in
}

// deleteInode removes an inode and its xattrs (not its orphan mark: only
// releasing an orphan deletes one that has it).
func (t *txn) deleteInode(in *inode) error {
	t.cache[in.Ino] = nil
	t.dirty[in.Ino] = false
	t.inodeDelta--
	if in.isDir() {
		t.dirsGone = append(t.dirsGone, in.Ino)
	}
	if in.Layout != nil && in.Layout.DoMSize != 0 {
		t.b.Delete(domKey(in.Ino), nil)
	}
	if in.NoXattrs {
		return nil
	}
	return t.deleteXattrs(in.Ino)
}

func (t *txn) deleteXattrs(ino uint64) error {
	p := xattrPrefix(ino)
	it, err := t.s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return fmt.Errorf("listing xattrs: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		t.b.Delete(it.Key(), nil)
	}
	return it.Close()
}

func (t *txn) setDent(parent uint64, name string, d dent) {
	t.cover(parent)
	t.b.Set(dentKey(parent, name), encodeDent(d), nil)
	t.nameChanges = append(t.nameChanges, nameChange{parent: parent, name: name, d: d})
}

func (t *txn) delDent(parent uint64, name string) {
	t.cover(parent)
	t.b.Delete(dentKey(parent, name), nil)
	t.nameChanges = append(t.nameChanges, nameChange{parent: parent, name: name, del: true})
}

// dropObjects queues the stripe objects of in's layout for destruction,
// unless they are deferred (no OST holds any).
func (t *txn) dropObjects(in *inode) {
	if in.Layout != nil && !in.LazyObjects {
		t.queueDestroy(in.Layout.Objects)
	}
}

// queueDestroy puts a layout's objects on the destroy queue.
func (t *txn) queueDestroy(objs []api.StripeObject) {
	for _, o := range objs {
		t.b.Set(destroyKey(o.ObjID, o.OST), nil, nil)
	}
	t.queued = append(t.queued, objs...)
}

// newObjectID allocates an id for stripe objects from the inode number
// space (never reused), without making an inode of it.
func (t *txn) newObjectID() uint64 {
	id := t.nextIno
	t.nextIno++
	return id
}

// record appends a changelog record to the outbox, in this batch.
func (t *txn) record(r api.ChangeRecord) {
	r.Seq = t.nextSeq
	t.nextSeq++
	if r.Time == 0 {
		r.Time = t.now
	}
	t.b.Set(changeKey(r.Seq), encodeChangeRecord(r), nil)
}

// flush writes the dirty inodes and the counters into the batch.
func (t *txn) flush() error {
	for ino, write := range t.dirty {
		if o, ok := t.orig[ino]; ok {
			t.cover(o)
		}
		if write {
			t.cover(coverOf(t.cache[ino]))
		}
	}
	if err := t.checkCovered(); err != nil {
		return err
	}
	for ino, write := range t.dirty {
		if write {
			t.writeInode(t.cache[ino])
		} else {
			t.b.Delete(inodeKey(ino), nil)
			t.inodeWrites = append(t.inodeWrites, inodeWrite{ino: ino})
		}
	}
	if t.b.Empty() {
		return nil
	}
	if t.nextIno != t.s.nextIno || t.nextSeq != t.s.nextSeq || t.inodeDelta != 0 {
		t.b.Set(keyCounters, counters(t.nextIno, t.nextSeq, uint64(int64(t.s.inodes.Load())+t.inodeDelta)), nil)
	}
	return nil
}

// pebbleLogger sends Pebble's log to slog. Pebble calls Fatalf only when it
// cannot continue (a failed commit leaves its pipeline unusable); it panics
// rather than exit, with the reason logged first.
type pebbleLogger struct {
	log *slog.Logger
	st  atomic.Pointer[store]
}

func (l *pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "src", "pebble")
}

func (l *pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "src", "pebble")
}

func (l *pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg, "src", "pebble", "fatal", true)
	if s := l.st.Load(); s != nil {
		s.fail(api.Errorf(api.CodeIO, "metadata store: %s", msg))
	}
	panic("pebble: " + msg)
}
