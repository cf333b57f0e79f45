package meta

import (
	"slices"
	"testing"

	"github.com/stria/stria/api"
)

// TestChangesTakeBarriersOnCoveringDirs checks that every change takes its
// change barrier, for the mount that asked, on exactly the directories whose
// locks cover what it alters (api/lock.go): a client caching under a lock
// the barrier missed would keep a stale name or attribute.
func TestChangesTakeBarriersOnCoveringDirs(t *testing.T) {
	h := newHarness(t, 1)
	h.cli.SetLockClient("mount-a")
	a := h.mkdir(api.RootIno, "a")
	b := h.mkdir(api.RootIno, "b")
	f := h.mkfile(a, "f")
	takeBarriers(h.fs)

	// dirs returns the directories of the barriers taken since the last
	// call, the last attempt's (a change retried with more directories
	// takes a wider barrier), checking they were taken for mount-a.
	dirs := func(what string) []uint64 {
		t.Helper()
		bs := takeBarriers(h.fs)
		if len(bs) == 0 {
			t.Fatalf("%s: no change barrier taken", what)
		}
		last := bs[len(bs)-1]
		if last.For != "mount-a" {
			t.Fatalf("%s: barrier taken for %q, want mount-a", what, last.For)
		}
		got := slices.Clone(last.Dirs)
		slices.Sort(got)
		return got
	}
	want := func(what string, got []uint64, w ...uint64) {
		t.Helper()
		slices.Sort(w)
		if !slices.Equal(got, w) {
			t.Fatalf("%s: barrier on %v, want %v", what, got, w)
		}
	}

	if at := h.attr(f); at.Parent != a {
		t.Fatalf("a new file's parent is %d, want %d", at.Parent, a)
	}
	h.mkfile(a, "g")
	want("create in a", dirs("create"), a)

	h.must(api.OpSetAttr, api.SetAttrReq{Ino: f, Valid: api.SetMode, Mode: 0o600}, nil)
	want("chmod of a file in a", dirs("setattr"), a)
	h.must(api.OpSetAttr, api.SetAttrReq{Ino: b, Valid: api.SetMode, Mode: 0o700}, nil)
	want("chmod of directory b", dirs("setattr"), b)
	h.must(api.OpUpdateSize, api.UpdateSizeReq{Ino: f, Size: 10, Mtime: 1}, nil)
	want("size of a file in a", dirs("updatesize"), a)

	h.must(api.OpRename, api.RenameReq{Parent: a, Name: "f", NewParent: b, NewName: "f"}, nil)
	want("file moved from a to b", dirs("rename"), a, b)
	if at := h.attr(f); at.Parent != b {
		t.Fatalf("moved file's parent is %d, want %d", at.Parent, b)
	}
	h.must(api.OpSetAttr, api.SetAttrReq{Ino: f, Valid: api.SetMode, Mode: 0o644}, nil)
	want("chmod of the moved file", dirs("setattr"), b)

	// A second link: no one directory covers the file any more, and the
	// directory that did loses it.
	h.must(api.OpLink, api.LinkReq{Ino: f, NewParent: a, NewName: "f2"}, nil)
	want("link into a", dirs("link"), a, b)
	if at := h.attr(f); at.Parent != 0 {
		t.Fatalf("hard-linked file's parent is %d, want 0", at.Parent)
	}
	h.must(api.OpSetAttr, api.SetAttrReq{Ino: f, Valid: api.SetMode, Mode: 0o600}, nil)
	if bs := takeBarriers(h.fs); len(bs) != 0 {
		t.Fatalf("chmod of a hard-linked file took barriers %+v: nothing caches it", bs)
	}
	h.must(api.OpUnlink, api.UnlinkReq{Parent: a, Name: "f2"}, nil)
	want("unlink in a", dirs("unlink"), a)

	// Removing a directory alters what its own lock covers: the retry
	// widens the barrier from the parent to both.
	c := h.mkdir(b, "c")
	takeBarriers(h.fs)
	h.must(api.OpUnlink, api.UnlinkReq{Parent: b, Name: "c", Dir: true}, nil)
	want("rmdir of b/c", dirs("rmdir"), b, c)

	// A mount that sends no client id gets a barrier for no one: every
	// lock is recalled, its own included.
	h.cli.SetLockClient("")
	h.mkfile(a, "h")
	if bs := takeBarriers(h.fs); len(bs) != 1 || bs[0].For != "" {
		t.Fatalf("anonymous create: barriers %+v, want one for no client", bs)
	}
}
