package meta

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stria/stria/api"
)

// opCase is one named call and the code it must return ("" = success);
// check, if set, inspects the decoded reply of a success.
type opCase struct {
	name  string
	op    string
	req   any
	resp  any
	want  api.Code
	check func(t *testing.T)
}

// runCases runs the cases in order (later cases may rely on earlier ones).
func runCases(t *testing.T, h *harness, cases []opCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.resp != nil {
				reflect.ValueOf(c.resp).Elem().SetZero()
			}
			err := h.call(c.op, c.req, c.resp)
			if got := codeOf(err); got != c.want {
				t.Fatalf("%s %+v: got code %q (%v), want %q", c.op, c.req, got, err, c.want)
			}
			if err == nil && c.check != nil {
				c.check(t)
			}
		})
	}
}

const (
	regMode = api.ModeReg | 0o644
	dirMode = api.ModeDir | 0o755
)

var caller = api.Caller{UID: 1000, GID: 1000}

func TestCreateAndLookup(t *testing.T) {
	h := newHarness(t, 3)
	d := h.mkdir(api.RootIno, "d")
	f := h.mkfile(d, "f")
	sgid := h.mkdir(api.RootIno, "sgid")
	h.must(api.OpSetAttr, api.SetAttrReq{Ino: sgid, Valid: api.SetMode | api.SetGID, Mode: 0o2775, GID: 4242}, nil)

	var (
		e  api.EntryResp
		e2 api.EntryResp
		a  api.AttrResp
		rl api.ReadlinkResp
	)
	cr := func(name string, mode uint32) api.CreateReq {
		return api.CreateReq{Parent: d, Name: name, Mode: mode, Caller: caller}
	}
	withLayout := func(name string, l api.Layout) api.CreateReq {
		r := cr(name, regMode)
		r.Layout = &l
		return r
	}
	cases := []opCase{
		{name: "file", op: api.OpCreate, req: cr("new", regMode), resp: &e, check: func(t *testing.T) {
			if !e.Created || !e.Attr.IsReg() || e.Attr.Nlink != 1 || e.Attr.UID != 1000 || e.Attr.GID != 1000 || e.Attr.Mode != regMode {
				t.Fatalf("bad entry %+v", e)
			}
			if e.Layout == nil || len(e.Layout.Objects) != 1 || e.Layout.Objects[0].ObjID != e.Attr.Ino || e.Layout.StripeSize != api.DefaultStripeSize {
				t.Fatalf("bad layout %+v", e.Layout)
			}
			if err := e.Layout.ValidateFile(); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "existing file, not exclusive", op: api.OpCreate, req: cr("new", regMode), resp: &e2, check: func(t *testing.T) {
			if e2.Created || e2.Attr.Ino != e.Attr.Ino || e2.Layout == nil {
				t.Fatalf("want the existing inode %d, got %+v", e.Attr.Ino, e2)
			}
		}},
		{name: "existing file, exclusive", op: api.OpCreate, req: api.CreateReq{Parent: d, Name: "new", Mode: regMode, Exclusive: true}, want: api.CodeExists},
		{name: "mkdir over file", op: api.OpCreate, req: cr("new", dirMode), want: api.CodeExists},
		{name: "mkdir", op: api.OpCreate, req: cr("dir", dirMode), resp: &e, check: func(t *testing.T) {
			if e.Attr.Nlink != 2 || !e.Attr.IsDir() || e.Layout != nil {
				t.Fatalf("bad dir %+v", e)
			}
			if got := h.attr(d).Nlink; got != 3 {
				t.Fatalf("parent nlink %d, want 3", got)
			}
		}},
		{name: "file over dir", op: api.OpCreate, req: cr("dir", regMode), want: api.CodeExists},
		{name: "symlink", op: api.OpCreate, req: api.CreateReq{Parent: d, Name: "sl", Mode: api.ModeLink | 0o777, Target: "../some/where"}, resp: &e, check: func(t *testing.T) {
			if e.Attr.Size != uint64(len("../some/where")) || e.Layout != nil {
				t.Fatalf("bad symlink %+v", e)
			}
			h.must(api.OpReadlink, api.InoReq{Ino: e.Attr.Ino}, &rl)
			if rl.Target != "../some/where" {
				t.Fatalf("readlink %q", rl.Target)
			}
		}},
		{name: "symlink without target", op: api.OpCreate, req: cr("sl2", api.ModeLink|0o777), want: api.CodeInvalid},
		{name: "symlink target too long", op: api.OpCreate, req: api.CreateReq{Parent: d, Name: "sl3", Mode: api.ModeLink | 0o777, Target: longName(4096)}, want: api.CodeNameTooLong},
		{name: "symlink target 4095 bytes", op: api.OpCreate, req: api.CreateReq{Parent: d, Name: "sl4", Mode: api.ModeLink | 0o777, Target: longName(4095)}},
		{name: "target on a file", op: api.OpCreate, req: api.CreateReq{Parent: d, Name: "x", Mode: regMode, Target: "t"}, want: api.CodeInvalid},
		{name: "fifo", op: api.OpCreate, req: cr("fifo", api.ModeFIFO|0o600), resp: &e, check: func(t *testing.T) {
			if e.Attr.Mode != api.ModeFIFO|0o600 || e.Layout != nil {
				t.Fatalf("bad fifo %+v", e)
			}
		}},
		{name: "socket", op: api.OpCreate, req: cr("sock", api.ModeSock|0o600)},
		{name: "char device", op: api.OpCreate, req: api.CreateReq{Parent: d, Name: "chr", Mode: api.ModeChr | 0o600, Rdev: 0x0103}, resp: &e, check: func(t *testing.T) {
			if e.Attr.Rdev != 0x0103 {
				t.Fatalf("rdev %#x", e.Attr.Rdev)
			}
		}},
		{name: "block device", op: api.OpCreate, req: api.CreateReq{Parent: d, Name: "blk", Mode: api.ModeBlk | 0o600, Rdev: 0x0801}},
		{name: "unknown file type", op: api.OpCreate, req: cr("bad", 0o070000|0o644), want: api.CodeInvalid},
		{name: "no file type", op: api.OpCreate, req: cr("bad", 0o644), want: api.CodeInvalid},
		{name: "unknown mode bits", op: api.OpCreate, req: cr("bad", 1<<20|regMode), want: api.CodeInvalid},
		{name: "name too long", op: api.OpCreate, req: cr(longName(256), regMode), want: api.CodeNameTooLong},
		{name: "name of 255 bytes", op: api.OpCreate, req: cr(longName(255), regMode)},
		{name: "empty name", op: api.OpCreate, req: cr("", regMode), want: api.CodeInvalid},
		{name: "dot", op: api.OpCreate, req: cr(".", regMode), want: api.CodeInvalid},
		{name: "dotdot", op: api.OpCreate, req: cr("..", regMode), want: api.CodeInvalid},
		{name: "slash in name", op: api.OpCreate, req: cr("a/b", regMode), want: api.CodeInvalid},
		{name: "NUL in name", op: api.OpCreate, req: cr("a\x00b", regMode), want: api.CodeInvalid},
		{name: "missing parent", op: api.OpCreate, req: api.CreateReq{Parent: 999999, Name: "x", Mode: regMode}, want: api.CodeNotFound},
		{name: "parent is a file", op: api.OpCreate, req: api.CreateReq{Parent: f, Name: "x", Mode: regMode}, want: api.CodeNotDir},
		{name: "parent 0", op: api.OpCreate, req: api.CreateReq{Parent: 0, Name: "x", Mode: regMode}, want: api.CodeInvalid},
		{name: "layout on a dir", op: api.OpCreate, req: api.CreateReq{Parent: d, Name: "ld", Mode: dirMode, Layout: &api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: -1}}, want: api.CodeInvalid},
		{name: "stripe count above OST count", op: api.OpCreate, req: withLayout("l4", api.Layout{StripeCount: 4, StripeSize: 1 << 20, StripeOffset: -1}), want: api.CodeInvalid},
		{name: "stripe size not multiple of 64KiB", op: api.OpCreate, req: withLayout("lsz", api.Layout{StripeCount: 1, StripeSize: 100000, StripeOffset: -1}), want: api.CodeInvalid},
		{name: "stripe size zero", op: api.OpCreate, req: withLayout("lsz0", api.Layout{StripeCount: 1, StripeOffset: -1}), want: api.CodeInvalid},
		{name: "stripe count zero", op: api.OpCreate, req: withLayout("lc0", api.Layout{StripeCount: 0, StripeSize: 1 << 20, StripeOffset: -1}), want: api.CodeInvalid},
		{name: "offset of an unknown OST", op: api.OpCreate, req: withLayout("lo", api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: 7}), want: api.CodeInvalid},
		{name: "pool", op: api.OpCreate, req: withLayout("lp", api.Layout{StripeCount: 1, StripeSize: 1 << 20, StripeOffset: -1, Pool: "fast"}), want: api.CodeInvalid},
		{name: "two stripes from OST 2", op: api.OpCreate, req: withLayout("l2", api.Layout{StripeCount: 2, StripeSize: 128 << 10, StripeOffset: 2}), resp: &e, check: func(t *testing.T) {
			want := []api.StripeObject{{OST: 2, ObjID: e.Attr.Ino}, {OST: 0, ObjID: e.Attr.Ino}}
			if e.Layout == nil || !slices.Equal(e.Layout.Objects, want) || e.Layout.StripeSize != 128<<10 || e.Layout.StripeCount != 2 {
				t.Fatalf("layout %+v, want objects %v", e.Layout, want)
			}
		}},
		{name: "all OSTs", op: api.OpCreate, req: withLayout("lall", api.Layout{StripeCount: -1, StripeSize: 1 << 20, StripeOffset: -1}), resp: &e, check: func(t *testing.T) {
			if e.Layout == nil || len(e.Layout.Objects) != 3 || e.Layout.StripeCount != 3 {
				t.Fatalf("layout %+v", e.Layout)
			}
			seen := map[uint32]bool{}
			for _, o := range e.Layout.Objects {
				seen[o.OST] = true
			}
			if len(seen) != 3 {
				t.Fatalf("objects not on distinct OSTs: %v", e.Layout.Objects)
			}
		}},
		{name: "setgid dir gives its group", op: api.OpCreate, req: api.CreateReq{Parent: sgid, Name: "f", Mode: regMode, Caller: caller}, resp: &e, check: func(t *testing.T) {
			if e.Attr.GID != 4242 || e.Attr.UID != 1000 || e.Attr.Mode&0o2000 != 0 {
				t.Fatalf("file in setgid dir: %+v", e.Attr)
			}
		}},
		{name: "setgid dir: subdir keeps setgid", op: api.OpCreate, req: api.CreateReq{Parent: sgid, Name: "sub", Mode: dirMode, Caller: caller}, resp: &e, check: func(t *testing.T) {
			if e.Attr.GID != 4242 || e.Attr.Mode&0o2000 == 0 {
				t.Fatalf("dir in setgid dir: %+v", e.Attr)
			}
		}},

		{name: "lookup file", op: api.OpLookup, req: api.LookupReq{Parent: d, Name: "f"}, resp: &e, check: func(t *testing.T) {
			if e.Attr.Ino != f || e.Layout == nil || e.Created {
				t.Fatalf("lookup %+v", e)
			}
		}},
		{name: "lookup dir has no layout", op: api.OpLookup, req: api.LookupReq{Parent: api.RootIno, Name: "d"}, resp: &e2, check: func(t *testing.T) {
			if e2.Attr.Ino != d || e2.Layout != nil {
				t.Fatalf("lookup %+v", e2)
			}
		}},
		{name: "lookup missing", op: api.OpLookup, req: api.LookupReq{Parent: d, Name: "nope"}, want: api.CodeNotFound},
		{name: "lookup in a file", op: api.OpLookup, req: api.LookupReq{Parent: f, Name: "x"}, want: api.CodeNotDir},
		{name: "lookup in a missing dir", op: api.OpLookup, req: api.LookupReq{Parent: 1 << 40, Name: "x"}, want: api.CodeNotFound},
		{name: "lookup bad name", op: api.OpLookup, req: api.LookupReq{Parent: d, Name: "a/b"}, want: api.CodeInvalid},
		{name: "lookup long name", op: api.OpLookup, req: api.LookupReq{Parent: d, Name: longName(300)}, want: api.CodeNameTooLong},
		{name: "lookup parent 0", op: api.OpLookup, req: api.LookupReq{Name: "x"}, want: api.CodeInvalid},
		{name: "getattr root", op: api.OpGetAttr, req: api.InoReq{Ino: api.RootIno}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Ino != api.RootIno || a.Attr.Mode != api.ModeDir|0o755 || a.Attr.UID != 0 || a.Attr.GID != 0 || a.Attr.Nlink != 4 {
				t.Fatalf("root %+v", a.Attr)
			}
		}},
		{name: "getattr missing", op: api.OpGetAttr, req: api.InoReq{Ino: 1 << 50}, want: api.CodeNotFound},
		{name: "getattr 0", op: api.OpGetAttr, req: api.InoReq{}, want: api.CodeInvalid},
		{name: "readlink of a file", op: api.OpReadlink, req: api.InoReq{Ino: f}, want: api.CodeInvalid},
		{name: "readlink missing", op: api.OpReadlink, req: api.InoReq{Ino: 1 << 50}, want: api.CodeNotFound},
	}
	runCases(t, h, cases)
}

func TestLinkUnlink(t *testing.T) {
	h := newHarness(t, 1)
	d := h.mkdir(api.RootIno, "d")
	f := h.mkfile(d, "f")
	sub := h.mkdir(d, "sub")
	h.mkfile(sub, "x")
	empty := h.mkdir(d, "empty")
	var (
		e  api.EntryResp
		ur api.UnlinkResp
	)
	cases := []opCase{
		{name: "link", op: api.OpLink, req: api.LinkReq{Ino: f, NewParent: api.RootIno, NewName: "f2"}, resp: &e, check: func(t *testing.T) {
			if e.Attr.Nlink != 2 || e.Attr.Ino != f || e.Layout == nil {
				t.Fatalf("link %+v", e)
			}
		}},
		{name: "link a dir", op: api.OpLink, req: api.LinkReq{Ino: sub, NewParent: api.RootIno, NewName: "s2"}, want: api.CodePerm},
		{name: "link onto an existing name", op: api.OpLink, req: api.LinkReq{Ino: f, NewParent: d, NewName: "sub"}, want: api.CodeExists},
		{name: "link missing inode", op: api.OpLink, req: api.LinkReq{Ino: 1 << 40, NewParent: d, NewName: "z"}, want: api.CodeNotFound},
		{name: "link into a file", op: api.OpLink, req: api.LinkReq{Ino: f, NewParent: f, NewName: "z"}, want: api.CodeNotDir},
		{name: "link name too long", op: api.OpLink, req: api.LinkReq{Ino: f, NewParent: d, NewName: longName(256)}, want: api.CodeNameTooLong},
		{name: "link ino 0", op: api.OpLink, req: api.LinkReq{NewParent: d, NewName: "z"}, want: api.CodeInvalid},

		{name: "unlink a dir", op: api.OpUnlink, req: api.UnlinkReq{Parent: d, Name: "sub"}, want: api.CodeIsDir},
		{name: "rmdir a file", op: api.OpUnlink, req: api.UnlinkReq{Parent: d, Name: "f", Dir: true}, want: api.CodeNotDir},
		{name: "rmdir non-empty", op: api.OpUnlink, req: api.UnlinkReq{Parent: d, Name: "sub", Dir: true}, want: api.CodeNotEmpty},
		{name: "unlink missing", op: api.OpUnlink, req: api.UnlinkReq{Parent: d, Name: "nope"}, want: api.CodeNotFound},
		{name: "unlink in a file", op: api.OpUnlink, req: api.UnlinkReq{Parent: f, Name: "x"}, want: api.CodeNotDir},
		{name: "unlink bad name", op: api.OpUnlink, req: api.UnlinkReq{Parent: d, Name: ".."}, want: api.CodeInvalid},
		{name: "unlink one of two links", op: api.OpUnlink, req: api.UnlinkReq{Parent: d, Name: "f"}, resp: &ur, check: func(t *testing.T) {
			if ur.Ino != f || ur.Nlink != 1 {
				t.Fatalf("unlink %+v", ur)
			}
			if got := h.attr(f).Nlink; got != 1 {
				t.Fatalf("nlink %d", got)
			}
			if _, err := h.lookup(d, "f"); codeOf(err) != api.CodeNotFound {
				t.Fatalf("lookup after unlink: %v", err)
			}
		}},
		{name: "unlink last link", op: api.OpUnlink, req: api.UnlinkReq{Parent: api.RootIno, Name: "f2"}, resp: &ur, check: func(t *testing.T) {
			if ur.Ino != f || ur.Nlink != 0 {
				t.Fatalf("unlink %+v", ur)
			}
			if err := h.call(api.OpGetAttr, api.InoReq{Ino: f}, nil); codeOf(err) != api.CodeNotFound {
				t.Fatalf("getattr of deleted inode: %v", err)
			}
		}},
		{name: "rmdir empty", op: api.OpUnlink, req: api.UnlinkReq{Parent: d, Name: "empty", Dir: true}, resp: &ur, check: func(t *testing.T) {
			if ur.Ino != empty {
				t.Fatalf("rmdir %+v", ur)
			}
			if got := h.attr(d).Nlink; got != 3 {
				t.Fatalf("parent nlink %d, want 3", got)
			}
		}},
		{name: "link to a deleted inode", op: api.OpLink, req: api.LinkReq{Ino: f, NewParent: d, NewName: "back"}, want: api.CodeNotFound},
		{name: "create in a removed dir", op: api.OpCreate, req: api.CreateReq{Parent: empty, Name: "x", Mode: regMode}, want: api.CodeNotFound},
	}
	runCases(t, h, cases)
}

func TestRename(t *testing.T) {
	h := newHarness(t, 1)
	a := h.mkdir(api.RootIno, "a")
	b := h.mkdir(api.RootIno, "b")
	f1 := h.mkfile(a, "f1")
	f2 := h.mkfile(a, "f2")
	h.mkfile(a, "f3")
	dx := h.mkdir(a, "dx")
	deep := h.mkdir(dx, "deep")
	h.mkfile(b, "busy")
	h.mkdir(b, "emptyd")
	full := h.mkdir(b, "full")
	h.mkfile(full, "x")
	h.must(api.OpLink, api.LinkReq{Ino: f1, NewParent: b, NewName: "f1link"}, nil)
	var rr api.RenameResp
	mv := func(p uint64, n string, np uint64, nn string) api.RenameReq {
		return api.RenameReq{Parent: p, Name: n, NewParent: np, NewName: nn}
	}
	expectIno := func(t *testing.T, parent uint64, name string, ino uint64) {
		t.Helper()
		e, err := h.lookup(parent, name)
		if err != nil || e.Attr.Ino != ino {
			t.Fatalf("lookup %d/%s: %+v %v, want ino %d", parent, name, e.Attr, err, ino)
		}
	}
	expectGone := func(t *testing.T, parent uint64, name string) {
		t.Helper()
		if _, err := h.lookup(parent, name); codeOf(err) != api.CodeNotFound {
			t.Fatalf("lookup %d/%s: %v, want not_found", parent, name, err)
		}
	}
	cases := []opCase{
		{name: "same dir", op: api.OpRename, req: mv(a, "f3", a, "f3b"), resp: &rr, check: func(t *testing.T) {
			expectGone(t, a, "f3")
			if rr.Replaced != 0 {
				t.Fatalf("replaced %d", rr.Replaced)
			}
		}},
		{name: "onto itself", op: api.OpRename, req: mv(a, "f3b", a, "f3b")},
		{name: "hard links of one inode", op: api.OpRename, req: mv(a, "f1", b, "f1link"), check: func(t *testing.T) {
			expectIno(t, a, "f1", f1)
			expectIno(t, b, "f1link", f1)
		}},
		{name: "file over file", op: api.OpRename, req: mv(a, "f2", a, "f3b"), resp: &rr, check: func(t *testing.T) {
			expectIno(t, a, "f3b", f2)
			expectGone(t, a, "f2")
			if rr.Replaced == 0 || rr.ReplacedNlink != 0 {
				t.Fatalf("resp %+v", rr)
			}
			if err := h.call(api.OpGetAttr, api.InoReq{Ino: rr.Replaced}, nil); codeOf(err) != api.CodeNotFound {
				t.Fatalf("replaced inode still there: %v", err)
			}
		}},
		{name: "file over dir", op: api.OpRename, req: mv(a, "f3b", b, "emptyd"), want: api.CodeIsDir},
		{name: "dir over file", op: api.OpRename, req: mv(a, "dx", b, "busy"), want: api.CodeNotDir},
		{name: "dir over non-empty dir", op: api.OpRename, req: mv(a, "dx", b, "full"), want: api.CodeNotEmpty},
		{name: "noreplace onto existing", op: api.OpRename, req: api.RenameReq{Parent: a, Name: "f3b", NewParent: b, NewName: "busy", Flags: api.RenameNoReplace}, want: api.CodeExists},
		{name: "noreplace onto free name", op: api.OpRename, req: api.RenameReq{Parent: a, Name: "f3b", NewParent: a, NewName: "f4", Flags: api.RenameNoReplace}},
		{name: "dir into itself", op: api.OpRename, req: mv(a, "dx", dx, "self"), want: api.CodeInvalid},
		{name: "dir into its subtree", op: api.OpRename, req: mv(a, "dx", deep, "loop"), want: api.CodeInvalid},
		{name: "ancestor onto descendant's dir", op: api.OpRename, req: mv(api.RootIno, "a", deep, "a"), want: api.CodeInvalid},
		{name: "missing source", op: api.OpRename, req: mv(a, "nope", b, "x"), want: api.CodeNotFound},
		{name: "source parent is a file", op: api.OpRename, req: mv(f1, "x", b, "x"), want: api.CodeNotDir},
		{name: "target parent missing", op: api.OpRename, req: mv(a, "f1", 1<<40, "x"), want: api.CodeNotFound},
		{name: "target name too long", op: api.OpRename, req: mv(a, "f1", b, longName(256)), want: api.CodeNameTooLong},
		{name: "unknown flags", op: api.OpRename, req: api.RenameReq{Parent: a, Name: "f1", NewParent: b, NewName: "x", Flags: 8}, want: api.CodeInvalid},
		{name: "noreplace and exchange", op: api.OpRename, req: api.RenameReq{Parent: a, Name: "f1", NewParent: b, NewName: "busy", Flags: api.RenameNoReplace | api.RenameExchange}, want: api.CodeInvalid},
		{name: "exchange with a missing entry", op: api.OpRename, req: api.RenameReq{Parent: a, Name: "f1", NewParent: b, NewName: "nope", Flags: api.RenameExchange}, want: api.CodeNotFound},
		{name: "dir across dirs", op: api.OpRename, req: mv(a, "dx", b, "dx"), check: func(t *testing.T) {
			expectIno(t, b, "dx", dx)
			if na, nb := h.attr(a).Nlink, h.attr(b).Nlink; na != 2 || nb != 5 {
				t.Fatalf("nlinks a=%d b=%d, want 2 and 5", na, nb)
			}
			// The moved dir's parent pointer follows: moving b under dx is a loop.
			if err := h.call(api.OpRename, mv(api.RootIno, "b", deep, "b"), nil); codeOf(err) != api.CodeInvalid {
				t.Fatalf("loop through moved dir: %v", err)
			}
		}},
		{name: "dir over empty dir", op: api.OpRename, req: mv(b, "dx", b, "emptyd"), resp: &rr, check: func(t *testing.T) {
			expectIno(t, b, "emptyd", dx)
			if nb := h.attr(b).Nlink; nb != 4 {
				t.Fatalf("nlink b=%d, want 4", nb)
			}
			if err := h.call(api.OpGetAttr, api.InoReq{Ino: rr.Replaced}, nil); codeOf(err) != api.CodeNotFound {
				t.Fatalf("replaced dir still there: %v", err)
			}
		}},
		{name: "exchange file and dir across dirs", op: api.OpRename, req: api.RenameReq{Parent: a, Name: "f1", NewParent: b, NewName: "emptyd", Flags: api.RenameExchange}, check: func(t *testing.T) {
			expectIno(t, a, "f1", dx)
			expectIno(t, b, "emptyd", f1)
			if na, nb := h.attr(a).Nlink, h.attr(b).Nlink; na != 3 || nb != 3 {
				t.Fatalf("nlinks a=%d b=%d, want 3 and 3", na, nb)
			}
		}},
		{name: "exchange two files", op: api.OpRename, req: api.RenameReq{Parent: a, Name: "f4", NewParent: b, NewName: "busy", Flags: api.RenameExchange}, check: func(t *testing.T) {
			expectIno(t, b, "busy", f2)
		}},
		{name: "a leaf to exchange with", op: api.OpCreate, req: api.CreateReq{Parent: deep, Name: "leaf", Mode: regMode}},
		{name: "exchange dir into its own subtree", op: api.OpRename, req: api.RenameReq{Parent: api.RootIno, Name: "a", NewParent: deep, NewName: "leaf", Flags: api.RenameExchange}, want: api.CodeInvalid},
		{name: "exchange a name with itself", op: api.OpRename, req: api.RenameReq{Parent: deep, Name: "leaf", NewParent: deep, NewName: "leaf", Flags: api.RenameExchange}},
	}
	runCases(t, h, cases)

	t.Run("replace keeps an open file as orphan", func(t *testing.T) {
		o := h.mkfile(a, "open")
		h.mkfile(a, "other")
		var rr api.RenameResp
		h.must(api.OpRename, api.RenameReq{Parent: a, Name: "other", NewParent: a, NewName: "open", KeepOpen: true}, &rr)
		if rr.Replaced != o || rr.ReplacedNlink != 0 {
			t.Fatalf("resp %+v", rr)
		}
		if at := h.attr(o); at.Nlink != 0 {
			t.Fatalf("orphan nlink %d", at.Nlink)
		}
		h.must(api.OpReleaseOrphan, api.InoReq{Ino: o}, nil)
		if err := h.call(api.OpGetAttr, api.InoReq{Ino: o}, nil); codeOf(err) != api.CodeNotFound {
			t.Fatalf("released orphan still there: %v", err)
		}
	})
}

func TestSetAttrUpdateSize(t *testing.T) {
	h := newHarness(t, 1)
	f := h.mkfile(api.RootIno, "f")
	d := h.mkdir(api.RootIno, "d")
	sl := h.symlink(api.RootIno, "sl", "target")
	g := h.mkfile(api.RootIno, "g")
	var a api.AttrResp
	var killed api.Attr
	before := h.attr(f)
	future := time.Now().UnixNano() + 1e12
	cases := []opCase{
		{name: "chmod keeps the type", op: api.OpSetAttr, req: api.SetAttrReq{Ino: f, Valid: api.SetMode, Mode: 0o4711}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Mode != api.ModeReg|0o4711 || a.Attr.Ctime <= before.Ctime {
				t.Fatalf("attr %+v", a.Attr)
			}
		}},
		{name: "chmod ignores type bits asked for", op: api.OpSetAttr, req: api.SetAttrReq{Ino: f, Valid: api.SetMode, Mode: api.ModeDir | 0o600}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Mode != api.ModeReg|0o600 {
				t.Fatalf("mode %o", a.Attr.Mode)
			}
		}},
		{name: "chown", op: api.OpSetAttr, req: api.SetAttrReq{Ino: f, Valid: api.SetUID | api.SetGID, UID: 7, GID: 8}, resp: &a, check: func(t *testing.T) {
			if a.Attr.UID != 7 || a.Attr.GID != 8 {
				t.Fatalf("attr %+v", a.Attr)
			}
		}},
		{name: "set-ID bits", op: api.OpSetAttr, req: api.SetAttrReq{Ino: g, Valid: api.SetMode, Mode: 0o6775}, resp: &a},
		{name: "a write's kill clears both set-ID bits", op: api.OpSetAttr, req: api.SetAttrReq{Ino: g, Valid: api.SetKillSUIDGID}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Mode != api.ModeReg|0o775 {
				t.Fatalf("mode %o", a.Attr.Mode)
			}
			killed = a.Attr
		}},
		{name: "a kill with nothing to clear changes nothing, ctime included", op: api.OpSetAttr, req: api.SetAttrReq{Ino: g, Valid: api.SetKillSUIDGID}, resp: &a, check: func(t *testing.T) {
			if a.Attr != killed {
				t.Fatalf("attr %+v, want %+v", a.Attr, killed)
			}
		}},
		{name: "set-group-ID without group execute", op: api.OpSetAttr, req: api.SetAttrReq{Ino: g, Valid: api.SetMode, Mode: 0o6745}, resp: &a},
		{name: "a chown's kill keeps set-group-ID without group execute", op: api.OpSetAttr, req: api.SetAttrReq{Ino: g, Valid: api.SetUID | api.SetKillSUIDGID, UID: 9}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Mode != api.ModeReg|0o2745 || a.Attr.UID != 9 {
				t.Fatalf("attr %+v", a.Attr)
			}
		}},
		{name: "set-group-ID directory", op: api.OpSetAttr, req: api.SetAttrReq{Ino: d, Valid: api.SetMode, Mode: 0o2775}, resp: &a},
		{name: "a kill leaves directories alone", op: api.OpSetAttr, req: api.SetAttrReq{Ino: d, Valid: api.SetKillSUIDGID}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Mode != api.ModeDir|0o2775 {
				t.Fatalf("mode %o", a.Attr.Mode)
			}
		}},
		{name: "truncate up", op: api.OpSetAttr, req: api.SetAttrReq{Ino: f, Valid: api.SetSize, Size: 5000}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Size != 5000 {
				t.Fatalf("size %d", a.Attr.Size)
			}
		}},
		{name: "truncate down", op: api.OpSetAttr, req: api.SetAttrReq{Ino: f, Valid: api.SetSize, Size: 10}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Size != 10 {
				t.Fatalf("size %d", a.Attr.Size)
			}
		}},
		{name: "explicit times", op: api.OpSetAttr, req: api.SetAttrReq{Ino: f, Valid: api.SetAtime | api.SetMtime, Atime: 111, Mtime: 222}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Atime != 111 || a.Attr.Mtime != 222 {
				t.Fatalf("attr %+v", a.Attr)
			}
		}},
		{name: "times now", op: api.OpSetAttr, req: api.SetAttrReq{Ino: f, Valid: api.SetAtimeNow | api.SetMtimeNow}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Atime <= 111 || a.Attr.Mtime <= 222 || a.Attr.Mtime != a.Attr.Ctime {
				t.Fatalf("attr %+v", a.Attr)
			}
		}},
		{name: "explicit ctime", op: api.OpSetAttr, req: api.SetAttrReq{Ino: f, Valid: api.SetCtime, Ctime: 333}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Ctime != 333 {
				t.Fatalf("attr %+v", a.Attr)
			}
		}},
		{name: "size of a dir", op: api.OpSetAttr, req: api.SetAttrReq{Ino: d, Valid: api.SetSize, Size: 0}, want: api.CodeIsDir},
		{name: "size of a symlink", op: api.OpSetAttr, req: api.SetAttrReq{Ino: sl.Attr.Ino, Valid: api.SetSize, Size: 0}, want: api.CodeInvalid},
		{name: "chmod a dir", op: api.OpSetAttr, req: api.SetAttrReq{Ino: d, Valid: api.SetMode, Mode: 0o700}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Mode != api.ModeDir|0o700 {
				t.Fatalf("mode %o", a.Attr.Mode)
			}
		}},
		{name: "unknown bits", op: api.OpSetAttr, req: api.SetAttrReq{Ino: f, Valid: 1 << 20}, want: api.CodeInvalid},
		{name: "missing inode", op: api.OpSetAttr, req: api.SetAttrReq{Ino: 1 << 40, Valid: api.SetMode}, want: api.CodeNotFound},
		{name: "ino 0", op: api.OpSetAttr, req: api.SetAttrReq{Valid: api.SetMode}, want: api.CodeInvalid},

		{name: "updatesize grows", op: api.OpUpdateSize, req: api.UpdateSizeReq{Ino: f, Size: 1 << 20, Mtime: future}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Size != 1<<20 || a.Attr.Mtime != future {
				t.Fatalf("attr %+v", a.Attr)
			}
		}},
		{name: "updatesize never shrinks nor goes back in time", op: api.OpUpdateSize, req: api.UpdateSizeReq{Ino: f, Size: 100, Mtime: 10}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Size != 1<<20 || a.Attr.Mtime != future {
				t.Fatalf("attr %+v", a.Attr)
			}
		}},
		{name: "updatesize newer mtime only", op: api.OpUpdateSize, req: api.UpdateSizeReq{Ino: f, Size: 100, Mtime: future + 1}, resp: &a, check: func(t *testing.T) {
			if a.Attr.Size != 1<<20 || a.Attr.Mtime != future+1 {
				t.Fatalf("attr %+v", a.Attr)
			}
		}},
		{name: "updatesize of a dir", op: api.OpUpdateSize, req: api.UpdateSizeReq{Ino: d, Size: 1}, want: api.CodeIsDir},
		{name: "updatesize of a symlink", op: api.OpUpdateSize, req: api.UpdateSizeReq{Ino: sl.Attr.Ino, Size: 1}, want: api.CodeInvalid},
		{name: "updatesize missing", op: api.OpUpdateSize, req: api.UpdateSizeReq{Ino: 1 << 40, Size: 1}, want: api.CodeNotFound},
		{name: "updatesize huge", op: api.OpUpdateSize, req: api.UpdateSizeReq{Ino: f, Size: 1 << 63}, want: api.CodeTooBig},
	}
	runCases(t, h, cases)
}

func TestXattr(t *testing.T) {
	h := newHarness(t, 2)
	f := h.mkfile(api.RootIno, "f")
	d := h.mkdir(api.RootIno, "d")
	var (
		x  api.XattrResp
		lr api.LayoutResp
	)
	big := make([]byte, api.MaxXattrSize)
	cases := []opCase{
		{name: "set", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user.a", Value: []byte("1")}},
		{name: "get", op: api.OpGetXattr, req: api.XattrReq{Ino: f, Name: "user.a"}, resp: &x, check: func(t *testing.T) {
			if string(x.Value) != "1" {
				t.Fatalf("value %q", x.Value)
			}
		}},
		{name: "create over existing", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user.a", Value: []byte("2"), Flags: api.XattrCreate}, want: api.CodeExists},
		{name: "replace absent", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user.b", Value: []byte("2"), Flags: api.XattrReplace}, want: api.CodeNoAttr},
		{name: "replace present", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user.a", Value: []byte("3"), Flags: api.XattrReplace}},
		{name: "create absent", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user.b", Value: nil, Flags: api.XattrCreate}},
		{name: "create and replace", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user.c", Flags: api.XattrCreate | api.XattrReplace}, want: api.CodeInvalid},
		{name: "unknown flags", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user.c", Flags: 4}, want: api.CodeInvalid},
		{name: "largest value", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user.big", Value: big}},
		{name: "value too big", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user.big2", Value: append(big, 1)}, want: api.CodeTooBig},
		{name: "name too long", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "user." + longName(251), Value: []byte("1")}, want: api.CodeRange},
		{name: "empty name", op: api.OpSetXattr, req: api.XattrReq{Ino: f, Name: "", Value: []byte("1")}, want: api.CodeInvalid},
		{name: "set on missing inode", op: api.OpSetXattr, req: api.XattrReq{Ino: 1 << 40, Name: "user.a"}, want: api.CodeNotFound},
		{name: "get replaced", op: api.OpGetXattr, req: api.XattrReq{Ino: f, Name: "user.a"}, resp: &x, check: func(t *testing.T) {
			if string(x.Value) != "3" {
				t.Fatalf("value %q", x.Value)
			}
		}},
		{name: "get absent", op: api.OpGetXattr, req: api.XattrReq{Ino: f, Name: "user.zzz"}, want: api.CodeNoAttr},
		{name: "get name too long", op: api.OpGetXattr, req: api.XattrReq{Ino: f, Name: longName(256)}, want: api.CodeRange},
		{name: "list", op: api.OpListXattr, req: api.XattrReq{Ino: f}, resp: &x, check: func(t *testing.T) {
			if !slices.Equal(x.Names, []string{"user.a", "user.b", "user.big"}) {
				t.Fatalf("names %q", x.Names)
			}
		}},
		{name: "list missing inode", op: api.OpListXattr, req: api.XattrReq{Ino: 1 << 40}, want: api.CodeNotFound},
		{name: "remove", op: api.OpRemoveXattr, req: api.XattrReq{Ino: f, Name: "user.b"}},
		{name: "remove absent", op: api.OpRemoveXattr, req: api.XattrReq{Ino: f, Name: "user.b"}, want: api.CodeNoAttr},
		{name: "layout xattr of a file", op: api.OpGetXattr, req: api.XattrReq{Ino: f, Name: api.LayoutXattr}, resp: &x, check: func(t *testing.T) {
			l, err := api.ParseLayout(x.Value)
			if err != nil || len(l.Objects) != 1 || l.Objects[0].ObjID != f {
				t.Fatalf("layout %s: %v", x.Value, err)
			}
		}},
		{name: "layout xattr of a dir without default", op: api.OpGetXattr, req: api.XattrReq{Ino: d, Name: api.LayoutXattr}, want: api.CodeNoAttr},
		{name: "set layout xattr on a dir", op: api.OpSetXattr, req: api.XattrReq{Ino: d, Name: api.LayoutXattr, Value: []byte(`{"stripe_count":2,"stripe_size":262144,"stripe_offset":-1}`)}, check: func(t *testing.T) {
			h.must(api.OpGetLayout, api.LayoutReq{Ino: d}, &lr)
			if lr.Inherited || lr.Layout.StripeCount != 2 || lr.Layout.StripeSize != 256<<10 {
				t.Fatalf("layout %+v", lr)
			}
		}},
		{name: "layout xattr is not listed", op: api.OpListXattr, req: api.XattrReq{Ino: d}, resp: &x, check: func(t *testing.T) {
			if len(x.Names) != 0 {
				t.Fatalf("names %q", x.Names)
			}
		}},
		{name: "bad layout xattr", op: api.OpSetXattr, req: api.XattrReq{Ino: d, Name: api.LayoutXattr, Value: []byte(`{"stripe_count":`)}, want: api.CodeInvalid},
		{name: "layout xattr too many stripes", op: api.OpSetXattr, req: api.XattrReq{Ino: d, Name: api.LayoutXattr, Value: []byte(`{"stripe_count":3,"stripe_size":262144,"stripe_offset":-1}`)}, want: api.CodeInvalid},
		{name: "remove layout xattr of a dir", op: api.OpRemoveXattr, req: api.XattrReq{Ino: d, Name: api.LayoutXattr}, check: func(t *testing.T) {
			h.must(api.OpGetLayout, api.LayoutReq{Ino: d}, &lr)
			if !lr.Inherited {
				t.Fatalf("layout %+v", lr)
			}
		}},
		{name: "remove layout xattr of a file", op: api.OpRemoveXattr, req: api.XattrReq{Ino: f, Name: api.LayoutXattr}, want: api.CodePerm},
	}
	runCases(t, h, cases)
}

// TestXattrsGoWithTheInode: a file's extended attributes are deleted with
// it, whether it ever had some or not (a file created never having had any
// is deleted without looking for them), and a file given one and then
// relinked keeps knowing it has them.
func TestXattrsGoWithTheInode(t *testing.T) {
	h := newHarness(t, 1)
	keys := func(ino uint64) int {
		t.Helper()
		p := xattrPrefix(ino)
		it, err := h.srv.st.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		n := 0
		for ok := it.First(); ok; ok = it.Next() {
			n++
		}
		return n
	}
	with := h.mkfile(api.RootIno, "with")
	without := h.mkfile(api.RootIno, "without")
	h.must(api.OpSetXattr, api.XattrReq{Ino: with, Name: "user.a", Value: []byte("1")}, nil)
	h.must(api.OpSetXattr, api.XattrReq{Ino: with, Name: "user.b", Value: []byte("2")}, nil)
	h.must(api.OpRename, api.RenameReq{Parent: api.RootIno, Name: "with", NewParent: api.RootIno, NewName: "moved"}, nil)
	if n := keys(with); n != 2 {
		t.Fatalf("%d xattr records before the unlink, want 2", n)
	}
	for _, name := range []string{"moved", "without"} {
		h.must(api.OpUnlink, api.UnlinkReq{Parent: api.RootIno, Name: name}, nil)
	}
	if n := keys(with); n != 0 {
		t.Fatalf("%d xattr records left after the unlink", n)
	}
	if n := keys(without); n != 0 {
		t.Fatalf("%d xattr records of a file that never had any", n)
	}
}

func TestLayouts(t *testing.T) {
	h := newHarness(t, 3)
	d := h.mkdir(api.RootIno, "d")
	sub := h.mkdir(d, "sub")
	f := h.mkfile(api.RootIno, "f")
	full := h.mkfile(api.RootIno, "full")
	h.must(api.OpUpdateSize, api.UpdateSizeReq{Ino: full, Size: 10, Mtime: 1}, nil)
	sl := h.symlink(api.RootIno, "sl", "target")
	var (
		lr  api.LayoutResp
		e   api.EntryResp
		old api.Layout
	)
	lay := func(count int32, size uint32, off int32) api.Layout {
		return api.Layout{StripeCount: count, StripeSize: size, StripeOffset: off}
	}
	cases := []opCase{
		{name: "file layout", op: api.OpGetLayout, req: api.LayoutReq{Ino: f}, resp: &lr, check: func(t *testing.T) {
			if lr.Inherited || len(lr.Layout.Objects) != 1 {
				t.Fatalf("layout %+v", lr)
			}
			old = lr.Layout
		}},
		{name: "dir inherits the default", op: api.OpGetLayout, req: api.LayoutReq{Ino: d}, resp: &lr, check: func(t *testing.T) {
			if !lr.Inherited || lr.Layout.StripeCount != api.DefaultStripeCount || lr.Layout.StripeSize != api.DefaultStripeSize {
				t.Fatalf("layout %+v", lr)
			}
		}},
		{name: "set dir default", op: api.OpSetLayout, req: api.LayoutReq{Ino: d, Layout: lay(2, 2<<20, -1)}},
		{name: "dir own default", op: api.OpGetLayout, req: api.LayoutReq{Ino: d}, resp: &lr, check: func(t *testing.T) {
			if lr.Inherited || lr.Layout.StripeCount != 2 || lr.Layout.StripeSize != 2<<20 || len(lr.Layout.Objects) != 0 {
				t.Fatalf("layout %+v", lr)
			}
		}},
		{name: "subdir inherits from ancestor", op: api.OpGetLayout, req: api.LayoutReq{Ino: sub}, resp: &lr, check: func(t *testing.T) {
			if !lr.Inherited || lr.Layout.StripeCount != 2 || lr.Layout.StripeSize != 2<<20 {
				t.Fatalf("layout %+v", lr)
			}
		}},
		{name: "file under it gets the default", op: api.OpCreate, req: api.CreateReq{Parent: sub, Name: "g", Mode: regMode}, resp: &e, check: func(t *testing.T) {
			if e.Layout == nil || len(e.Layout.Objects) != 2 || e.Layout.StripeSize != 2<<20 || e.Layout.Objects[0].OST == e.Layout.Objects[1].OST {
				t.Fatalf("layout %+v", e.Layout)
			}
		}},
		{name: "stripe count above OST count", op: api.OpSetLayout, req: api.LayoutReq{Ino: d, Layout: lay(4, 1<<20, -1)}, want: api.CodeInvalid},
		{name: "stripe size not multiple of 64KiB", op: api.OpSetLayout, req: api.LayoutReq{Ino: d, Layout: lay(1, 65537, -1)}, want: api.CodeInvalid},
		{name: "stripe offset below -1", op: api.OpSetLayout, req: api.LayoutReq{Ino: d, Layout: lay(1, 1<<20, -2)}, want: api.CodeInvalid},
		{name: "all-OST default stays -1", op: api.OpSetLayout, req: api.LayoutReq{Ino: sub, Layout: lay(-1, 1<<20, -1)}, check: func(t *testing.T) {
			h.must(api.OpGetLayout, api.LayoutReq{Ino: sub}, &lr)
			if lr.Layout.StripeCount != -1 {
				t.Fatalf("layout %+v", lr)
			}
			e := h.create(sub, "wide", regMode)
			if len(e.Layout.Objects) != 3 {
				t.Fatalf("layout %+v", e.Layout)
			}
		}},
		{name: "relayout an empty file", op: api.OpSetLayout, req: api.LayoutReq{Ino: f, Layout: lay(3, 1<<20, 0)}, resp: &lr, check: func(t *testing.T) {
			if len(lr.Layout.Objects) != 3 || lr.Layout.Objects[0].OST != 0 {
				t.Fatalf("layout %+v", lr)
			}
			e, _ := h.lookup(api.RootIno, "f")
			if e.Layout == nil || len(e.Layout.Objects) != 3 {
				t.Fatalf("lookup layout %+v", e.Layout)
			}
			_ = old
		}},
		{name: "relayout a file with data", op: api.OpSetLayout, req: api.LayoutReq{Ino: full, Layout: lay(2, 1<<20, -1)}, want: api.CodeExists},
		{name: "layout of a symlink", op: api.OpGetLayout, req: api.LayoutReq{Ino: sl.Attr.Ino}, want: api.CodeNoAttr},
		{name: "set layout of a symlink", op: api.OpSetLayout, req: api.LayoutReq{Ino: sl.Attr.Ino, Layout: lay(1, 1<<20, -1)}, want: api.CodeInvalid},
		{name: "layout of a missing inode", op: api.OpGetLayout, req: api.LayoutReq{Ino: 1 << 40}, want: api.CodeNotFound},
		{name: "root default", op: api.OpSetLayout, req: api.LayoutReq{Ino: api.RootIno, Layout: lay(1, 4<<20, -1)}, check: func(t *testing.T) {
			var st api.StatFSResp
			h.must(api.OpStatFS, api.Empty{}, &st)
			if st.StripeSize != 4<<20 {
				t.Fatalf("statfs stripe size %d", st.StripeSize)
			}
		}},
	}
	runCases(t, h, cases)

	t.Run("no OSTs", func(t *testing.T) {
		h2 := newHarness(t, 0)
		err := h2.call(api.OpCreate, api.CreateReq{Parent: api.RootIno, Name: "f", Mode: regMode}, nil)
		if codeOf(err) != api.CodeUnavailable {
			t.Fatalf("create without OSTs: %v", err)
		}
		// Directories and the rest need no OST.
		h2.mkdir(api.RootIno, "d")
		h2.create(api.RootIno, "p", api.ModeFIFO|0o644)
	})
}

func TestReadDirPaging(t *testing.T) {
	h := newHarness(t, 1)
	d := h.mkdir(api.RootIno, "big")
	const n = 10000
	names := make([]string, n)
	for i := range names {
		names[i] = "entry-" + itoa(i)
	}
	if err := parallel(16, n, func(i int) error {
		return h.call(api.OpCreate, api.CreateReq{Parent: d, Name: names[i], Mode: api.ModeFIFO | 0o644}, nil)
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if got := h.attr(d).Nlink; got != 2 {
		t.Fatalf("nlink %d", got)
	}

	var got []string
	after := ""
	pages := 0
	for {
		var r api.ReadDirResp
		h.must(api.OpReadDir, api.ReadDirReq{Ino: d, After: after, Limit: 999}, &r)
		pages++
		for _, e := range r.Entries {
			if e.Attr.Ino == 0 || e.Attr.Mode != api.ModeFIFO|0o644 {
				t.Fatalf("entry %+v", e)
			}
			got = append(got, e.Name)
		}
		if !r.More {
			break
		}
		if len(r.Entries) == 0 {
			t.Fatal("empty page with More")
		}
		after = r.Entries[len(r.Entries)-1].Name
	}
	if !slices.Equal(got, names) {
		t.Fatalf("readdir returned %d names (pages %d), want %d in order", len(got), pages, len(names))
	}
	if pages != 11 {
		t.Fatalf("pages %d, want 11", pages)
	}

	cases := []struct {
		name      string
		req       api.ReadDirReq
		wantN     int
		wantMore  bool
		wantFirst string
		want      api.Code
	}{
		{name: "default limit", req: api.ReadDirReq{Ino: d}, wantN: 1024, wantMore: true, wantFirst: names[0]},
		{name: "limit above max uses default", req: api.ReadDirReq{Ino: d, Limit: api.MaxReadDirPage + 1}, wantN: 1024, wantMore: true},
		{name: "max page", req: api.ReadDirReq{Ino: d, Limit: api.MaxReadDirPage}, wantN: api.MaxReadDirPage, wantMore: true},
		{name: "strictly after", req: api.ReadDirReq{Ino: d, After: names[5], Limit: 2}, wantN: 2, wantMore: true, wantFirst: names[6]},
		{name: "after a name that does not exist", req: api.ReadDirReq{Ino: d, After: "entry-5000a", Limit: 1}, wantN: 1, wantMore: true, wantFirst: "entry-5001"},
		{name: "after the last", req: api.ReadDirReq{Ino: d, After: names[n-1]}, wantN: 0},
		{name: "empty dir", req: api.ReadDirReq{Ino: h.mkdir(api.RootIno, "empty")}, wantN: 0},
		{name: "not a dir", req: api.ReadDirReq{Ino: h.mkfile(api.RootIno, "f")}, want: api.CodeNotDir},
		{name: "missing", req: api.ReadDirReq{Ino: 1 << 40}, want: api.CodeNotFound},
		{name: "ino 0", req: api.ReadDirReq{}, want: api.CodeInvalid},
		{name: "cursor too long", req: api.ReadDirReq{Ino: d, After: longName(256)}, want: api.CodeNameTooLong},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r api.ReadDirResp
			err := h.call(api.OpReadDir, c.req, &r)
			if codeOf(err) != c.want {
				t.Fatalf("code %v, want %q", err, c.want)
			}
			if err != nil {
				return
			}
			if len(r.Entries) != c.wantN || r.More != c.wantMore {
				t.Fatalf("%d entries more=%v, want %d more=%v", len(r.Entries), r.More, c.wantN, c.wantMore)
			}
			if c.wantFirst != "" && r.Entries[0].Name != c.wantFirst {
				t.Fatalf("first %q, want %q", r.Entries[0].Name, c.wantFirst)
			}
		})
	}

	t.Run("long names are cut to fit one message", func(t *testing.T) {
		ld := h.mkdir(api.RootIno, "long")
		if err := parallel(16, 3000, func(i int) error {
			return h.call(api.OpCreate, api.CreateReq{Parent: ld, Name: itoa(i) + "-" + longName(240), Mode: api.ModeFIFO | 0o644}, nil)
		}); err != nil {
			t.Fatal(err)
		}
		var r api.ReadDirResp
		h.must(api.OpReadDir, api.ReadDirReq{Ino: ld, Limit: api.MaxReadDirPage}, &r)
		if !r.More || len(r.Entries) == 0 || len(r.Entries) >= 3000 {
			t.Fatalf("%d entries more=%v", len(r.Entries), r.More)
		}
		data, _ := json.Marshal(r)
		if int64(len(data)) > env.nc.MaxPayload() {
			t.Fatalf("reply of %d bytes", len(data))
		}
	})
}

func TestSyncStatFS(t *testing.T) {
	h := newHarness(t, 3)
	h.mkfile(api.RootIno, "a")
	h.mkdir(api.RootIno, "b")
	h.must(api.OpSync, api.Empty{}, nil)
	h.must(api.OpSync, nil, nil)
	h.osts[1].down.Store(true)
	// OST 5 joined once and is gone now.
	if _, err := env.etcd.Put(t.Context(), api.OSTIndexKey(h.fs, 5), "ost-5"); err != nil {
		t.Fatal(err)
	}
	var st api.StatFSResp
	h.must(api.OpStatFS, api.Empty{}, &st)
	if st.Inodes != 3 || st.NameMax != 255 || st.StripeSize != api.DefaultStripeSize || st.MetaTotal == 0 || st.MaxInodes <= st.Inodes {
		t.Fatalf("statfs %+v", st)
	}
	if len(st.OSTs) != 4 {
		t.Fatalf("OSTs %+v", st.OSTs)
	}
	for _, o := range st.OSTs {
		switch o.Index {
		case 0, 2:
			if !o.Up || o.Total != 1<<40 || o.Objects != 7 || o.Addr == "" {
				t.Fatalf("OST %+v", o)
			}
		case 1:
			if o.Up || o.Error == "" {
				t.Fatalf("down OST %+v", o)
			}
		case 5:
			if o.Up || o.Error != "not registered" {
				t.Fatalf("gone OST %+v", o)
			}
		}
	}
	if err := h.call(api.OpStatFS, api.InoReq{Ino: 1}, nil); codeOf(err) != api.CodeInvalid {
		t.Fatalf("statfs with a body: %v", err)
	}
}

// TestMalformedRequests: every operation refuses garbage with invalid and
// changes nothing.
func TestMalformedRequests(t *testing.T) {
	h := newHarness(t, 1)
	h.mkfile(api.RootIno, "f")
	before := h.attr(api.RootIno)
	bodies := map[string]string{
		"not json":       "not json",
		"unknown field":  `{"bogus":1}`,
		"trailing data":  `{} {}`,
		"wrong type":     `{"ino":"one","parent":"x","name":5,"valid":"x","mode":"x","size":"x","limit":"x","layout":"x","flags":"x","value":7}`,
		"array":          `[1,2]`,
		"negative ino":   `{"ino":-1,"parent":-1}`,
		"huge number":    `{"ino":1e400}`,
		"truncated json": `{"ino":1`,
	}
	for _, op := range api.MetaOps {
		for name, body := range bodies {
			t.Run(op+"/"+name, func(t *testing.T) {
				msg, err := env.nc.Request(api.MetaSubject(h.fs, op), []byte(body), 5e9)
				if err != nil {
					t.Fatal(err)
				}
				if code := msg.Header.Get("Nats-Service-Error-Code"); code != string(api.CodeInvalid) {
					t.Fatalf("code %q (%s), want invalid", code, msg.Header.Get("Nats-Service-Error"))
				}
			})
		}
	}
	after := h.attr(api.RootIno)
	if after != before {
		t.Fatalf("root changed: %+v -> %+v", before, after)
	}

	// The service's stats count the refused requests.
	msg, err := env.nc.Request("$SRV.STATS."+ServiceName, nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats struct {
		Endpoints []struct {
			Subject string
			Data    struct{ Requests, Errors uint64 }
		}
	}
	if err := json.Unmarshal(msg.Data, &stats); err != nil {
		t.Fatal(err)
	}
	for _, e := range stats.Endpoints {
		if e.Subject == api.MetaSubject(h.fs, api.OpCreate) {
			if e.Data.Errors != uint64(len(bodies)) || e.Data.Requests != uint64(len(bodies))+1 {
				t.Fatalf("create stats %+v", e.Data)
			}
			return
		}
	}
	t.Fatalf("no stats for this file system's create endpoint in %s", msg.Data)
}

func itoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// parallel runs fn(0..n-1) on workers goroutines and returns the first error.
func parallel(workers, n int, fn func(i int) error) error {
	var (
		next  = make(chan int)
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = fmt.Errorf("item %d: %w", i, err) })
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// TestInheritedLayoutWithOSTDown: a directory default wider than the OSTs up
// now still lets files be created, over the OSTs there are.
func TestInheritedLayoutWithOSTDown(t *testing.T) {
	h := newHarness(t, 3)
	d := h.mkdir(api.RootIno, "d")
	h.must(api.OpSetLayout, api.LayoutReq{Ino: d, Layout: api.Layout{StripeCount: 3, StripeSize: 1 << 20, StripeOffset: 1}}, nil)
	h.removeOST(1)
	e := h.create(d, "f", regMode)
	want := []api.StripeObject{{OST: 2, ObjID: e.Attr.Ino}, {OST: 0, ObjID: e.Attr.Ino}}
	if !slices.Equal(e.Layout.Objects, want) || e.Layout.StripeCount != 2 {
		t.Fatalf("layout %+v, want objects %v", e.Layout, want)
	}
	// Asked for explicitly, the same layout is refused.
	l := api.Layout{StripeCount: 3, StripeSize: 1 << 20, StripeOffset: -1}
	if err := h.call(api.OpCreate, api.CreateReq{Parent: d, Name: "g", Mode: regMode, Layout: &l}, nil); codeOf(err) != api.CodeInvalid {
		t.Fatalf("explicit layout wider than the OSTs: %v", err)
	}
}

// New files take the default layout of their nearest ancestor as it is now,
// although the directories were read (and kept by the store) before it
// changed, or before the directory moved.
func TestDefaultLayoutFollowsChangesToAncestors(t *testing.T) {
	h := newHarness(t, 2)
	a := h.mkdir(api.RootIno, "a")
	b := h.mkdir(a, "b")
	stripes := func(file uint64) uint32 {
		t.Helper()
		var lr api.LayoutResp
		h.must(api.OpGetLayout, api.LayoutReq{Ino: file}, &lr)
		return uint32(lr.Layout.StripeCount)
	}
	if n := stripes(h.mkfile(b, "f1")); n != 1 {
		t.Fatalf("first file: %d stripes, want the file system's 1", n)
	}
	h.must(api.OpSetLayout, api.LayoutReq{Ino: a, Layout: api.Layout{StripeCount: 2, StripeSize: 1 << 20, StripeOffset: -1}}, nil)
	if n := stripes(h.mkfile(b, "f2")); n != 2 {
		t.Fatalf("after a default on the grandparent: %d stripes, want 2", n)
	}
	h.must(api.OpRename, api.RenameReq{Parent: a, Name: "b", NewParent: api.RootIno, NewName: "b"}, nil)
	if n := stripes(h.mkfile(b, "f3")); n != 1 {
		t.Fatalf("after the directory moved out: %d stripes, want 1", n)
	}
}
