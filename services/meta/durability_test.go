package meta

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestRestartPersistence(t *testing.T) {
	h := newHarness(t, 2)
	d := h.mkdir(api.RootIno, "d")
	f := h.create(d, "f", regMode)
	h.must(api.OpLink, api.LinkReq{Ino: f.Attr.Ino, NewParent: api.RootIno, NewName: "hard"}, nil)
	sl := h.symlink(d, "sl", "f")
	h.must(api.OpSetXattr, api.XattrReq{Ino: f.Attr.Ino, Name: "user.k", Value: []byte("v")}, nil)
	h.must(api.OpSetLayout, api.LayoutReq{Ino: d, Layout: api.Layout{StripeCount: 2, StripeSize: 128 << 10, StripeOffset: -1}}, nil)
	h.must(api.OpUpdateSize, api.UpdateSizeReq{Ino: f.Attr.Ino, Size: 12345, Mtime: time.Now().UnixNano()}, nil)
	orphan := h.mkfile(d, "orphan")
	h.must(api.OpUnlink, api.UnlinkReq{Parent: d, Name: "orphan", KeepOpen: true}, nil)
	before := map[uint64]api.Attr{}
	for _, ino := range []uint64{api.RootIno, d, f.Attr.Ino, sl.Attr.Ino, orphan} {
		before[ino] = h.attr(ino)
	}

	h.restart(nil)

	for ino, want := range before {
		if got := h.attr(ino); got != want {
			t.Errorf("inode %d after restart: %+v, want %+v", ino, got, want)
		}
	}
	e, err := h.lookup(d, "f")
	if err != nil || e.Attr.Ino != f.Attr.Ino || e.Layout == nil || e.Layout.String() != f.Layout.String() {
		t.Fatalf("lookup after restart: %+v %v", e, err)
	}
	if e, err := h.lookup(api.RootIno, "hard"); err != nil || e.Attr.Ino != f.Attr.Ino || e.Attr.Nlink != 2 {
		t.Fatalf("hard link after restart: %+v %v", e, err)
	}
	var rl api.ReadlinkResp
	h.must(api.OpReadlink, api.InoReq{Ino: sl.Attr.Ino}, &rl)
	var x api.XattrResp
	h.must(api.OpGetXattr, api.XattrReq{Ino: f.Attr.Ino, Name: "user.k"}, &x)
	var lr api.LayoutResp
	h.must(api.OpGetLayout, api.LayoutReq{Ino: d}, &lr)
	if rl.Target != "f" || string(x.Value) != "v" || lr.Inherited || lr.Layout.StripeCount != 2 {
		t.Fatalf("after restart: target %q xattr %q layout %+v", rl.Target, x.Value, lr)
	}
	var st api.StatFSResp
	h.must(api.OpStatFS, api.Empty{}, &st)
	if st.Inodes != 5 {
		t.Fatalf("inodes %d, want 5", st.Inodes)
	}
	// The orphan survives a restart of meta (gateways still hold it open).
	h.must(api.OpReleaseOrphan, api.InoReq{Ino: orphan}, nil)
	// Inode numbers are never reused.
	if n := h.mkfile(api.RootIno, "new"); n <= orphan {
		t.Fatalf("new inode %d reuses a number (last was %d)", n, orphan)
	}
}

func TestDestroyQueue(t *testing.T) {
	h := newHarness(t, 3)
	wide := api.Layout{StripeCount: 3, StripeSize: 1 << 20, StripeOffset: -1}
	mk := func(name string) uint64 {
		var e api.EntryResp
		h.must(api.OpCreate, api.CreateReq{Parent: api.RootIno, Name: name, Mode: regMode, Layout: &wide}, &e)
		return e.Attr.Ino
	}
	destroyedEverywhere := func(ino uint64) func() bool {
		return func() bool {
			for _, o := range h.osts {
				if o.destroys(ino) == 0 {
					return false
				}
			}
			return true
		}
	}

	t.Run("unlink", func(t *testing.T) {
		ino := mk("a")
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "a"}, nil)
		waitFor(t, "objects destroyed", 10*time.Second, destroyedEverywhere(ino))
	})
	t.Run("rename over a file", func(t *testing.T) {
		ino := mk("b")
		mk("c")
		h.must(api.OpRename, api.RenameReq{Parent: api.RootIno, Name: "c", NewParent: api.RootIno, NewName: "b"}, nil)
		waitFor(t, "objects destroyed", 10*time.Second, destroyedEverywhere(ino))
	})
	t.Run("orphan waits for release", func(t *testing.T) {
		ino := mk("open")
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "open", KeepOpen: true}, nil)
		if err := h.call(api.OpReleaseOrphan, api.InoReq{Ino: h.mkfile(api.RootIno, "notorphan")}, nil); codeOf(err) != api.CodeInvalid {
			t.Fatalf("release of a linked file: %v", err)
		}
		// Let the destroyer run a pass; nothing of the orphan may go.
		h.must(api.OpSync, api.Empty{}, nil)
		h.srv.wake(h.srv.wakeDestroyer)
		if destroyedEverywhere(ino)() || h.osts[0].destroys(ino)+h.osts[1].destroys(ino)+h.osts[2].destroys(ino) != 0 {
			t.Fatal("orphan's objects destroyed while open")
		}
		h.must(api.OpReleaseOrphan, api.InoReq{Ino: ino}, nil)
		waitFor(t, "objects destroyed", 10*time.Second, destroyedEverywhere(ino))
		if err := h.call(api.OpReleaseOrphan, api.InoReq{Ino: ino}, nil); codeOf(err) != api.CodeNotFound {
			t.Fatalf("second release: %v", err)
		}
	})
	t.Run("relayout queues the old objects", func(t *testing.T) {
		var e api.EntryResp
		h.must(api.OpCreate, api.CreateReq{Parent: api.RootIno, Name: "r", Mode: regMode, Layout: &api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: 0}}, &e)
		var lr api.LayoutResp
		h.must(api.OpSetLayout, api.LayoutReq{Ino: e.Attr.Ino, Layout: api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: 2}}, &lr)
		waitFor(t, "old object destroyed", 10*time.Second, func() bool { return h.osts[0].destroys(e.Attr.Ino) == 1 })
		second := lr.Layout.Objects[0]
		if second.ObjID == e.Attr.Ino || h.osts[2].destroys(second.ObjID) != 0 {
			t.Fatalf("new object %+v reuses the old id or was destroyed", second)
		}
		// Back onto OST 0: a new object again, never the one queued for
		// destruction there (a destroy in flight would remove its data).
		h.must(api.OpSetLayout, api.LayoutReq{Ino: e.Attr.Ino, Layout: api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: 0}}, &lr)
		third := lr.Layout.Objects[0]
		if third.OST != 0 || third.ObjID == e.Attr.Ino || third.ObjID == second.ObjID {
			t.Fatalf("third layout reuses an object: %+v", lr.Layout)
		}
		waitFor(t, "second object destroyed", 10*time.Second, func() bool { return h.osts[2].destroys(second.ObjID) == 1 })
		if h.osts[0].destroys(third.ObjID) != 0 {
			t.Fatal("live object destroyed")
		}
		// Object ids come from the inode number space: a new inode never
		// shares a number with an object id.
		if n := h.mkfile(api.RootIno, "after-relayout"); n <= third.ObjID {
			t.Fatalf("new inode %d not above object id %d", n, third.ObjID)
		}
	})
	t.Run("deferred objects of a file with a DoM region", func(t *testing.T) {
		dom := api.Layout{StripeCount: 3, StripeSize: 1 << 20, StripeOffset: -1, DoMSize: 64 << 10}
		mkDoM := func(name string) api.EntryResp {
			var e api.EntryResp
			h.must(api.OpCreate, api.CreateReq{Parent: api.RootIno, Name: name, Mode: regMode, Layout: &dom}, &e)
			if e.Layout == nil || len(e.Layout.Objects) != 3 || e.Layout.DoMSize != dom.DoMSize {
				t.Fatalf("layout of %s: %+v", name, e.Layout)
			}
			return e
		}
		queued := func(ino uint64) bool {
			it, err := h.srv.st.db.NewIter(nil)
			if err != nil {
				t.Fatal(err)
			}
			defer it.Close()
			for ok := it.First(); ok; ok = it.Next() {
				k := it.Key()
				if len(k) == 13 && k[0] == pfxDestroy && binary.BigEndian.Uint64(k[1:9]) == ino {
					return true
				}
			}
			return false
		}
		intent := func(e api.EntryResp) error {
			return h.call(api.OpLayoutIntent, api.LayoutIntentReq{Ino: e.Attr.Ino, ObjID: e.Layout.Objects[0].ObjID}, nil)
		}

		// Never written past its region: removed without a destroy.
		unused := mkDoM("dom-unused")
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "dom-unused"}, nil)
		if queued(unused.Attr.Ino) {
			t.Fatal("unused deferred objects queued for destruction")
		}

		// Used: refused for another layout's objects, or for what has
		// none; marked once (a second intent changes nothing), across a
		// restart; destroyed with the file.
		used := mkDoM("dom-used")
		if err := h.call(api.OpLayoutIntent, api.LayoutIntentReq{Ino: used.Attr.Ino, ObjID: used.Layout.Objects[0].ObjID + 1}, nil); codeOf(err) != api.CodeInvalid {
			t.Fatalf("intent for other objects: %v", err)
		}
		if err := h.call(api.OpLayoutIntent, api.LayoutIntentReq{Ino: api.RootIno, ObjID: api.RootIno}, nil); codeOf(err) != api.CodeInvalid {
			t.Fatalf("intent on a directory: %v", err)
		}
		if err := h.call(api.OpLayoutIntent, api.LayoutIntentReq{Ino: 1 << 50, ObjID: 1}, nil); codeOf(err) != api.CodeNotFound {
			t.Fatalf("intent on no inode: %v", err)
		}
		if err := intent(used); err != nil {
			t.Fatal(err)
		}
		before := h.srv.st.commits.Load()
		if err := intent(used); err != nil {
			t.Fatal(err)
		}
		if c := h.srv.st.commits.Load(); c != before {
			t.Fatalf("a second intent committed %d changes", c-before)
		}
		h.restart(nil)
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "dom-used"}, nil)
		waitFor(t, "used objects destroyed", 10*time.Second, destroyedEverywhere(used.Attr.Ino))

		// A new layout of a used file: its objects go, the new ones are
		// deferred again.
		re := mkDoM("dom-relayout")
		if err := intent(re); err != nil {
			t.Fatal(err)
		}
		var lr api.LayoutResp
		h.must(api.OpSetLayout, api.LayoutReq{Ino: re.Attr.Ino, Layout: dom}, &lr)
		waitFor(t, "old objects destroyed", 10*time.Second, destroyedEverywhere(re.Attr.Ino))
		if err := intent(re); codeOf(err) != api.CodeInvalid {
			t.Fatalf("intent for the replaced layout: %v", err)
		}
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "dom-relayout"}, nil)
		if queued(lr.Layout.Objects[0].ObjID) {
			t.Fatal("the new layout's unused objects queued for destruction")
		}

		// An orphan's used objects go when it is released.
		open := mkDoM("dom-open")
		if err := intent(open); err != nil {
			t.Fatal(err)
		}
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "dom-open", KeepOpen: true}, nil)
		if queued(open.Attr.Ino) {
			t.Fatal("open file's objects queued")
		}
		h.must(api.OpReleaseOrphan, api.InoReq{Ino: open.Attr.Ino}, nil)
		waitFor(t, "orphan's objects destroyed", 10*time.Second, destroyedEverywhere(open.Attr.Ino))

		// An eager layout (no region) needs no intent; one changes nothing.
		eager := mk("eager")
		before = h.srv.st.commits.Load()
		var e api.EntryResp
		h.must(api.OpLookup, api.LookupReq{Parent: api.RootIno, Name: "eager"}, &e)
		if err := intent(e); err != nil {
			t.Fatal(err)
		}
		if c := h.srv.st.commits.Load(); c != before {
			t.Fatal("intent on an eager layout committed a change")
		}
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "eager"}, nil)
		waitFor(t, "eager objects destroyed", 10*time.Second, destroyedEverywhere(eager))
		// The unused files' ids were never sent to an OST, by now.
		for _, o := range h.osts {
			if o.destroys(unused.Attr.Ino) != 0 || o.destroys(lr.Layout.Objects[0].ObjID) != 0 {
				t.Fatal("unused deferred objects destroyed")
			}
		}
	})
	t.Run("down OST is retried, never dropped", func(t *testing.T) {
		h.osts[1].down.Store(true)
		ino := mk("d")
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "d"}, nil)
		waitFor(t, "live OSTs destroyed", 10*time.Second, func() bool { return h.osts[0].destroys(ino) == 1 && h.osts[2].destroys(ino) == 1 })
		// And one that left the registry keeps its entries too.
		ino2 := mk("e")
		h.removeOST(2)
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "e"}, nil)
		waitFor(t, "OST 0 destroyed", 10*time.Second, func() bool { return h.osts[0].destroys(ino2) == 1 })
		h.osts[1].down.Store(false)
		waitFor(t, "down OST catches up", 20*time.Second, func() bool { return h.osts[1].destroys(ino) == 1 && h.osts[1].destroys(ino2) == 1 })
		if h.osts[2].destroys(ino2) != 0 {
			t.Fatal("destroy sent to an unregistered OST")
		}
		// The entry survives a restart and is done once the OST is back.
		h.restart(nil)
		h.addOST(2)
		waitFor(t, "returning OST catches up", 20*time.Second, func() bool { return h.osts[3].destroys(ino2) == 1 })
	})
}

// readChangelog returns the records in the file system's stream once it
// holds at least n, checking each message's ID against its records.
func readChangelog(t *testing.T, fs string, n int) []api.ChangeRecord {
	t.Helper()
	js, err := jetstream.New(env.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stream jetstream.Stream
	waitFor(t, "changelog stream", 20*time.Second, func() bool {
		s, err := js.Stream(ctx, api.ChangelogStream(fs))
		stream = s
		return err == nil
	})
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []api.ChangeRecord
	for len(out) < n {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("reading changelog after %d of %d records: %v", len(out), n, err)
		}
		recs, err := api.DecodeChangeRecords(m.Data())
		if err != nil || len(recs) == 0 {
			t.Fatalf("changelog message %q: %d records, %v", m.Data(), len(recs), err)
		}
		if id, want := m.Headers().Get(jetstream.MsgIDHeader), api.ChangeMsgID(recs[0].Seq, recs[len(recs)-1].Seq); id != want {
			t.Fatalf("message ID %q for records %d..%d", id, recs[0].Seq, recs[len(recs)-1].Seq)
		}
		out = append(out, recs...)
	}
	return out
}

// changeSequence performs one change of every kind and returns the record
// types it must produce, in order.
func changeSequence(h *harness) []string {
	d := h.mkdir(api.RootIno, "d")
	f := h.mkfile(d, "f")
	h.symlink(d, "sl", "f")
	h.create(d, "fifo", api.ModeFIFO|0o600)
	h.must(api.OpLink, api.LinkReq{Ino: f, NewParent: api.RootIno, NewName: "hard"}, nil)
	h.must(api.OpSetAttr, api.SetAttrReq{Ino: f, Valid: api.SetMode, Mode: 0o600}, nil)
	h.must(api.OpSetAttr, api.SetAttrReq{Ino: f, Valid: api.SetSize, Size: 0}, nil)
	h.must(api.OpSetXattr, api.XattrReq{Ino: f, Name: "user.a", Value: []byte("1")}, nil)
	h.must(api.OpRemoveXattr, api.XattrReq{Ino: f, Name: "user.a"}, nil)
	h.must(api.OpSetLayout, api.LayoutReq{Ino: d, Layout: api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: -1}}, nil)
	h.must(api.OpUpdateSize, api.UpdateSizeReq{Ino: f, Size: 10, Mtime: time.Now().UnixNano() + 1e12}, nil)
	h.must(api.OpRename, api.RenameReq{Parent: d, Name: "sl", NewParent: api.RootIno, NewName: "sl2"}, nil)
	h.must(api.OpRename, api.RenameReq{Parent: d, Name: "fifo", NewParent: api.RootIno, NewName: "hard"}, nil)
	h.must(api.OpUnlink, api.UnlinkReq{Parent: d, Name: "f"}, nil)
	h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "sl2"}, nil)
	h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "hard"}, nil)
	h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "d", Dir: true}, nil)
	// Refused requests log nothing.
	h.call(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: "nope"}, nil)
	return []string{
		api.ChangeMkdir, api.ChangeCreate, api.ChangeSymlink, api.ChangeMknod, api.ChangeLink,
		api.ChangeSetattr, api.ChangeTrunc, api.ChangeXattr, api.ChangeXattr, api.ChangeLayout,
		api.ChangeSetattr, api.ChangeRename, api.ChangeUnlink, api.ChangeRename, api.ChangeUnlink, api.ChangeUnlink,
		api.ChangeUnlink, api.ChangeRmdir,
	}
}

func checkChangelog(t *testing.T, recs []api.ChangeRecord, want []string) {
	t.Helper()
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d: %+v", len(recs), len(want), recs)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d: not consecutive", i, r.Seq)
		}
		if r.Type != want[i] || r.Ino == 0 || r.Time == 0 {
			t.Fatalf("record %d: %+v, want type %s", i, r, want[i])
		}
	}
}

func TestChangelog(t *testing.T) {
	h := newHarness(t, 1)
	want := changeSequence(h)
	recs := readChangelog(t, h.fs, len(want))
	checkChangelog(t, recs, want)
	if r := recs[11]; r.Parent == 0 || r.Name != "sl" || r.NewParent != api.RootIno || r.NewName != "sl2" {
		t.Fatalf("rename record %+v", r)
	}
	// Published records leave the outbox.
	waitFor(t, "outbox drained", 10*time.Second, func() bool { return outboxLen(h.srv) == 0 })
}

func outboxLen(s *Server) int {
	it, err := s.st.db.NewIter(nil)
	if err != nil {
		return -1
	}
	defer it.Close()
	n := 0
	for ok := it.SeekGE([]byte{pfxChange}); ok && it.Key()[0] == pfxChange; ok = it.Next() {
		n++
	}
	return n
}

func TestChangelogAfterRestart(t *testing.T) {
	h := newHarness(t, 1)
	h.restart(func(s *Server) { s.noPublisher = true })
	want := changeSequence(h)
	if n := outboxLen(h.srv); n != len(want) {
		t.Fatalf("outbox holds %d records, want %d", n, len(want))
	}
	h.restart(nil)
	recs := readChangelog(t, h.fs, len(want))
	checkChangelog(t, recs, want)
	// A later change continues the sequence.
	h.mkdir(api.RootIno, "later")
	recs = readChangelog(t, h.fs, len(want)+1)
	if last := recs[len(recs)-1]; last.Seq != uint64(len(want)+1) || last.Type != api.ChangeMkdir {
		t.Fatalf("next record %+v", last)
	}
}

// countingFS counts syncs of WAL files.
type countingFS struct {
	vfs.FS
	walSyncs *atomic.Int64
}

func (fs countingFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return countingFile{File: f, n: fs.walSyncs}, nil
}

func (fs countingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs countingFS) ReuseForWrite(old, name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(old, name, c)
	return fs.wrap(name, f, err)
}

func (fs countingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}

type countingFile struct {
	vfs.File
	n *atomic.Int64
}

func (f countingFile) Sync() error     { f.n.Add(1); return f.File.Sync() }
func (f countingFile) SyncData() error { f.n.Add(1); return f.File.SyncData() }
func (f countingFile) SyncTo(n int64) (bool, error) {
	f.n.Add(1)
	return f.File.SyncTo(n)
}

// TestChangesShareSyncs: changes reply once applied and a background sync
// covers many at once; every one becomes durable soon after with nothing
// else happening, and OpSync (fsync) makes all of them durable before it
// replies.
func TestChangesShareSyncs(t *testing.T) {
	h := newHarness(t, 1)
	var syncs atomic.Int64
	h.restart(func(s *Server) { s.fs = countingFS{FS: vfs.Default, walSyncs: &syncs} })
	d := h.mkdir(api.RootIno, "d")

	const workers, perWorker = 16, 40
	syncs.Store(0)
	start := time.Now()
	if err := parallel(workers, workers*perWorker, func(i int) error {
		return h.call(api.OpCreate, api.CreateReq{Parent: d, Name: "f" + itoa(i), Mode: regMode}, nil)
	}); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	waitFor(t, "the creates to become durable", 10*time.Second, func() bool {
		return h.srv.st.durableCommits.Load() >= h.srv.st.commits.Load()
	})
	creates, fsyncs := int64(workers*perWorker), syncs.Load()
	t.Logf("%d parallel creates: %d WAL fsyncs (%.1f creates per fsync), %.0f creates/s",
		creates, fsyncs, float64(creates)/float64(fsyncs), float64(creates)/elapsed.Seconds())
	if fsyncs == 0 {
		t.Fatal("no WAL fsync counted: durability not reached or counting broken")
	}
	if fsyncs*4 >= creates {
		t.Fatalf("%d fsyncs for %d creates: syncs are not shared", fsyncs, creates)
	}

	// With the syncer held back, nothing is synced until OpSync, which
	// syncs everything applied before it once.
	h.restart(func(s *Server) {
		s.fs = countingFS{FS: vfs.Default, walSyncs: &syncs}
		s.syncerGrace = time.Hour
	})
	syncs.Store(0)
	f := h.mkfile(d, "serial")
	h.must(api.OpUpdateSize, api.UpdateSizeReq{Ino: f, Size: 4096, Mtime: time.Now().UnixNano()}, nil)
	h.must(api.OpRename, api.RenameReq{Parent: d, Name: "serial", NewParent: api.RootIno, NewName: "moved"}, nil)
	if n := syncs.Load(); n != 0 {
		t.Fatalf("%d WAL syncs before any fsync, want 0", n)
	}
	committed := h.srv.st.commits.Load()
	h.must(api.OpSync, api.Empty{}, nil)
	if n := syncs.Load(); n != 1 {
		t.Fatalf("%d WAL syncs for one OpSync, want 1", n)
	}
	if got := h.srv.st.durableCommits.Load(); got < committed {
		t.Fatalf("after OpSync %d commits durable, want %d", got, committed)
	}
}

// TestStandby: a second server for the same file system waits while the
// first leads, and takes over when it stops.
func TestStandby(t *testing.T) {
	h := newHarness(t, 1)
	standby := h.newServer(t.TempDir(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- standby.Run(ctx) }()
	h.must(api.OpGetAttr, api.InoReq{Ino: api.RootIno}, nil)
	select {
	case <-standby.Ready():
		t.Fatal("standby serves while the leader runs")
	case <-time.After(300 * time.Millisecond):
	}
	h.stop()
	select {
	case <-standby.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("standby did not take over")
	}
	h.must(api.OpGetAttr, api.InoReq{Ino: api.RootIno}, nil)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("standby Run: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{DataDir: "/x"}, true},
		{"all set", Config{DataDir: "/x", FSName: "fs_1", LeaseTTL: 5 * time.Second, OSTTimeout: time.Second}, true},
		{"no data dir", Config{}, false},
		{"bad fsname", Config{DataDir: "/x", FSName: "Bad-Name"}, false},
		{"long fsname", Config{DataDir: "/x", FSName: strings.Repeat("a", 33)}, false},
		{"short lease", Config{DataDir: "/x", LeaseTTL: time.Millisecond}, false},
		{"negative ost timeout", Config{DataDir: "/x", OSTTimeout: -1}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.cfg.Validate(); (err == nil) != c.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, c.ok)
			}
		})
	}
	if _, err := New(Config{DataDir: "/x"}, Deps{}); err == nil {
		t.Fatal("New without connections succeeded")
	}
	b, _ := json.Marshal(DefaultConfig())
	if string(b) != `{"data-dir":"","fsname":"stria","lease-ttl":10000000000,"ost-timeout":5000000000}` {
		t.Fatalf("config JSON %s", b)
	}
}

// TestLeadershipLost: when the leader's etcd lease goes, it stops serving
// and Run reports it.
func TestLeadershipLost(t *testing.T) {
	h := newHarness(t, 1)
	resp, err := env.etcd.Get(t.Context(), api.MetaLeaderPrefix(h.fs), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("leader keys: %v %v", resp, err)
	}
	if _, err := env.etcd.Revoke(t.Context(), clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.done:
		if err == nil || !strings.Contains(err.Error(), "lost leadership") {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server kept running without its lease")
	}
	h.cancel()
	h.cancel = nil
	if err := h.call(api.OpGetAttr, api.InoReq{Ino: api.RootIno}, nil); codeOf(err) != api.CodeUnavailable {
		t.Fatalf("request after losing leadership: %v", err)
	}
}

// TestUpdateSizeSyncedInBackground: a size from writes is visible at once
// and becomes durable, and its changelog record published, with no later
// change to carry it; OpSync covers it at once.
func TestUpdateSizeSyncedInBackground(t *testing.T) {
	h := newHarness(t, 1)
	f := h.mkfile(api.RootIno, "f")
	start := h.srv.st.commits.Load()
	var a api.AttrResp
	h.must(api.OpUpdateSize, api.UpdateSizeReq{Ino: f, Size: 12345, Mtime: time.Now().UnixNano()}, &a)
	if a.Attr.Size != 12345 || h.attr(f).Size != 12345 {
		t.Fatalf("size after updatesize: reply %d, getattr %d", a.Attr.Size, h.attr(f).Size)
	}
	if h.srv.st.commits.Load() <= start {
		t.Fatal("updatesize applied no change")
	}
	waitFor(t, "the size to become durable", 10*time.Second, func() bool {
		return h.srv.st.durableCommits.Load() >= h.srv.st.commits.Load()
	})
	recs := readChangelog(t, h.fs, 2) // CREAT of f, then SATTR
	last := recs[len(recs)-1]
	if last.Type != api.ChangeSetattr || last.Ino != f || last.Size != 12345 {
		t.Fatalf("last record %+v, want SATTR of inode %d with size 12345", last, f)
	}

	// With the syncer's work done for it, OpSync alone makes a size
	// durable before it replies.
	h.must(api.OpUpdateSize, api.UpdateSizeReq{Ino: f, Size: 20000, Mtime: time.Now().UnixNano()}, nil)
	committed := h.srv.st.commits.Load()
	h.must(api.OpSync, api.Empty{}, nil)
	if got := h.srv.st.durableCommits.Load(); got < committed {
		t.Fatalf("after sync %d commits durable, want %d", got, committed)
	}
	// And it survives a restart.
	h.restart(nil)
	if got := h.attr(f).Size; got != 20000 {
		t.Fatalf("size after restart %d", got)
	}
}

// TestCleanStopAndCrash: a clean stop makes what the syncer held back
// durable; a store that was not closed cleanly (a crash may have lost
// changes whose inode numbers objects already use) never hands those
// numbers out again.
func TestCleanStopAndCrash(t *testing.T) {
	h := newHarness(t, 1)
	h.restart(func(s *Server) { s.syncerGrace = time.Hour })
	f := h.mkfile(api.RootIno, "f")
	h.must(api.OpUpdateSize, api.UpdateSizeReq{Ino: f, Size: 8192, Mtime: time.Now().UnixNano()}, nil)
	if h.srv.st.durableCommits.Load() >= h.srv.st.commits.Load() {
		t.Fatal("the changes were synced at once")
	}
	old := h.srv.st
	h.restart(nil)
	if old.durableCommits.Load() < old.commits.Load() {
		t.Fatalf("clean stop left commits %d..%d unsynced", old.durableCommits.Load()+1, old.commits.Load())
	}
	if got := h.attr(f).Size; got != 8192 {
		t.Fatalf("size after a clean stop %d, want 8192", got)
	}
	g := h.mkfile(api.RootIno, "g")
	if g > f+16 {
		t.Fatalf("after a clean restart inode %d follows %d: numbers skipped", g, f)
	}

	// A crash: the store is closed without the clean stop's mark.
	h.stop()
	st, err := openStore(h.dir, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.nextIno <= g {
		t.Fatalf("store reopened with next inode %d after %d", st.nextIno, g)
	}
	next := st.nextIno
	if err := st.close(); err != nil { // no markClean: as if killed
		t.Fatal(err)
	}
	h.start(nil)
	if n := h.mkfile(api.RootIno, "n"); n < next+inoGapAfterCrash {
		t.Fatalf("after an unclean stop the next inode is %d, want at least %d", n, next+inoGapAfterCrash)
	}
	if got := h.attr(f).Size; got != 8192 {
		t.Fatalf("size after the crash %d, want 8192", got)
	}
}

// TestFormat1Converted opens a store written by format 1 (the counters
// under three keys): it keeps counting where that store stopped, with the
// counters under one key from then on, and the namespace is unchanged.
func TestFormat1Converted(t *testing.T) {
	h := newHarness(t, 1)
	f := h.mkfile(api.RootIno, "f")
	h.stop()

	// Rewrite the store as format 1 would have left it after a clean stop.
	st, err := openStore(h.dir, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	nextIno, nextSeq, inodes := st.nextIno+1000, st.nextSeq+7, st.inodes.Load()
	b := st.db.NewBatch()
	b.Delete(keyCounters, nil)
	for i, v := range []uint64{nextIno, nextSeq, inodes} {
		b.Set(keyFormat1Counters[i], putU64(v), nil)
	}
	b.Set(keyFormat, putU64(1), nil)
	b.Set(keyClean, []byte{1}, nil)
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := st.close(); err != nil {
		t.Fatal(err)
	}

	st, err = openStore(h.dir, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if st.nextIno != nextIno || st.nextSeq != nextSeq || st.inodes.Load() != inodes {
		t.Fatalf("converted store counts from ino %d seq %d inodes %d, want %d %d %d", st.nextIno, st.nextSeq, st.inodes.Load(), nextIno, nextSeq, inodes)
	}
	if v, _ := st.getMeta(keyFormat); u64(v) != storeFormat {
		t.Fatalf("format after conversion %d, want %d", u64(v), storeFormat)
	}
	for _, k := range keyFormat1Counters {
		if v, _ := st.getMeta(k); v != nil {
			t.Fatalf("format 1 key %s left behind", k)
		}
	}
	if err := st.markClean(); err != nil {
		t.Fatal(err)
	}
	if err := st.close(); err != nil {
		t.Fatal(err)
	}

	h.start(nil)
	if got := h.attr(f); got.Ino != f {
		t.Fatalf("file %d after conversion: %+v", f, got)
	}
	if g := h.mkfile(api.RootIno, "g"); g != nextIno {
		t.Fatalf("first inode after conversion %d, want %d", g, nextIno)
	}
}

// TestUnknownFormatRefused: a store of a format this build does not know
// is not opened (nor changed).
func TestUnknownFormatRefused(t *testing.T) {
	h := newHarness(t, 1)
	h.stop()
	st, err := openStore(h.dir, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.db.Set(keyFormat, putU64(storeFormat+1), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	st.close()
	if st, err := openStore(h.dir, nil, testLogger(t)); err == nil {
		st.close()
		t.Fatal("a store of an unknown format was opened")
	} else if !strings.Contains(err.Error(), "format") {
		t.Fatalf("unknown format refused with %v", err)
	}
}
