package gateway

import (
	"context"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stria/stria/api"
)

// node is one inode of the mount.
//
// Lock order: node.mu is a leaf; Gateway.writtenMu may be held while taking
// a node.mu (localSize), never the other way round.
type node struct {
	fs.Inode
	gw *Gateway

	mu      sync.Mutex
	attr    api.Attr
	attrAt  time.Time
	layout  *api.Layout
	opens   int
	readers int          // open handles that can read
	orphan  bool         // unlinked while open: meta keeps it until release
	dirty   bool         // size/mtime not yet told to meta
	touched map[int]bool // stripes written since the last fsync
	// noCapsAt is when meta last said the file has no security.capability
	// xattr. The kernel asks for it before every write (to remove it);
	// the answer is kept for noCapsWindow, and dropped when this mount
	// changes xattrs, sees the ctime move, or loses the lock covering it.
	noCapsAt time.Time

	// Write-behind: writes in flight to the OSTs, and the first error one
	// of them met, reported by the next write, flush, fsync or close.
	inflight []*writeBehind
	pending  []*pendingWrite // see pendingWrite; sent before inflight empties
	wbErr    error
	wbDone   *sync.Cond // signalled (with mu) when a write completes

	// dataGen counts changes to the file's bytes that this mount made or
	// learnt of; read-ahead taken before one is not used after it.
	dataGen uint64
	// objectsUsed is the first object id of the layout whose stripe
	// objects this mount told meta it writes to (useObjects).
	objectsUsed uint64
}

type extent struct{ off, end int64 }

func (e extent) overlaps(f extent) bool { return e.off < f.end && f.off < e.end }

var (
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeReader         = (*node)(nil)
	_ fs.NodeWriter         = (*node)(nil)
	_ fs.NodeFlusher        = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeReleaser       = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeListxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)
)

func (g *Gateway) newNode(a api.Attr, l *api.Layout) *node {
	n := &node{gw: g, attr: a, attrAt: time.Now(), layout: l}
	n.wbDone = sync.NewCond(&n.mu)
	return n
}

func (n *node) ino() uint64 { return n.StableAttr().Ino }

func caller(ctx context.Context) api.Caller {
	if c, ok := fuse.FromContext(ctx); ok {
		return api.Caller{UID: c.Uid, GID: c.Gid}
	}
	return api.Caller{}
}

// fillAttr converts meta's attributes to FUSE's, preferring this mount's
// own unflushed size.
func (g *Gateway) fillAttr(a api.Attr, out *fuse.Attr) {
	if size, dirty := g.localSize(a.Ino); dirty && size > a.Size {
		a.Size = size
	}
	out.Ino = a.Ino
	out.Mode = a.Mode
	out.Nlink = a.Nlink
	out.Uid = a.UID
	out.Gid = a.GID
	out.Rdev = a.Rdev
	out.Size = a.Size
	out.Blocks = (a.Size + 511) / 512
	out.Blksize = 1 << 20
	out.SetTimes(timePtr(a.Atime), timePtr(a.Mtime), timePtr(a.Ctime))
}

func timePtr(ns int64) *time.Time {
	t := time.Unix(0, ns)
	return &t
}

// newChild returns the node for an entry meta returned for name: the one
// the mount already has under that name, refreshed, or a new one. (go-fuse
// keeps the node it already knows for an inode and drops a new one made
// for it, so a new node would leave the known one's attributes behind.)
func (n *node) newChild(ctx context.Context, name string, r api.EntryResp, out *fuse.EntryOut) *fs.Inode {
	n.gw.fillAttr(r.Attr, &out.Attr)
	if known := n.GetChild(name); known != nil && known.StableAttr().Ino == r.Attr.Ino {
		if kn, ok := known.Operations().(*node); ok {
			kn.refresh(r.Attr, r.Layout)
			return known
		}
	}
	ch := n.gw.newNode(r.Attr, r.Layout)
	return n.NewInode(ctx, ch, fs.StableAttr{Mode: r.Attr.Mode & api.ModeType, Ino: r.Attr.Ino, Gen: r.Attr.Gen})
}

// refresh takes attributes from meta, keeping the local size of unflushed
// writes.
func (n *node) refresh(a api.Attr, l *api.Layout) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dirty && n.attr.Size > a.Size {
		a.Size = n.attr.Size
	}
	if a.Ctime != n.attr.Ctime {
		n.noCapsAt = time.Time{}
	}
	if a.Mtime != n.attr.Mtime || a.Size != n.attr.Size {
		n.dataGen++ // perhaps another client's write
	}
	n.attr = a
	n.attrAt = time.Now()
	if l != nil {
		n.layout = l
	}
}

// freshAttr returns the node's attributes and whether they are fresh:
// taken within AttrTimeout (as the kernel's own copy would be) and not
// since made suspect by a recall of the lock covering them.
func (n *node) freshAttr() (api.Attr, bool) {
	n.mu.Lock()
	a, at := n.attr, n.attrAt
	n.mu.Unlock()
	fresh := time.Since(at) < n.gw.cfg.AttrTimeout && !n.gw.ns.recalledSince(coverOf(a), at)
	return a, fresh
}

// stale makes the next Getattr ask meta: a change this mount made altered
// attributes it has no reply for.
func (n *node) stale() {
	n.mu.Lock()
	n.attrAt = time.Time{}
	n.noCapsAt = time.Time{}
	n.mu.Unlock()
}

// changed takes a directory's attributes from meta's reply to a change in
// it, or marks them stale if there are none.
func (n *node) changed(parent *api.Attr) {
	if parent == nil {
		n.stale()
		return
	}
	n.refresh(*parent, nil)
}

// staleChild marks the named child's attributes stale (its link count or
// ctime changed).
func (n *node) staleChild(name string) {
	if ch := n.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok {
			cn.stale()
		}
	}
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if !utf8.ValidString(name) {
		return nil, syscall.ENOENT // no such name can be created
	}
	if err := api.ValidName(name); err != nil {
		return nil, n.gw.errno("lookup", err)
	}
	if r, absent, ok := n.gw.ns.lookup(n.ino(), name); ok {
		if absent {
			return nil, syscall.ENOENT
		}
		inode := n.newChild(ctx, name, r, out)
		n.gw.ns.entryTTLs(n.ino(), name, out)
		return inode, 0
	}
	seq := n.gw.ns.begin()
	var r api.EntryResp
	if err := n.gw.metaCall(ctx, api.OpLookup, api.LookupReq{Parent: n.ino(), Name: name}, &r); err != nil {
		if api.CodeOf(err) == api.CodeNotFound {
			n.gw.ns.learnAbsent(seq, n.ino(), name)
		}
		return nil, n.gw.errno("lookup", err)
	}
	n.gw.ns.learn(seq, n.ino(), name, r)
	inode := n.newChild(ctx, name, r, out)
	n.gw.ns.entryTTLs(n.ino(), name, out)
	return inode, 0
}

// currentAttr returns the node's attributes as of now, and whether they
// are its own fresh copy: every change this mount makes refreshes them from
// meta's reply or marks them stale, so a fresh copy is as good as asking
// meta (the kernel's own cache has the same lifetime; with --attr-timeout
// 0, the default, none is fresh). Otherwise the namespace cache answers
// what a held lock covers (creating a file, for one, makes the kernel ask
// for its directory's attributes again, and the create's reply put them
// there), else meta; either refreshes the node.
func (n *node) currentAttr(ctx context.Context) (api.Attr, bool, error) {
	a, fresh := n.freshAttr()
	if fresh {
		return a, true, nil
	}
	if in, ok := n.gw.ns.attr(n.ino(), a); ok {
		n.refresh(in.attr, nil)
		return in.attr, false, nil
	}
	seq := n.gw.ns.begin()
	var r api.AttrResp
	if err := n.gw.metaCall(ctx, api.OpGetAttr, api.InoReq{Ino: n.ino()}, &r); err != nil {
		return api.Attr{}, false, err
	}
	n.gw.ns.learnAttr(seq, r.Attr)
	n.refresh(r.Attr, nil)
	return r.Attr, false, nil
}

// Getattr answers with currentAttr; what did not come from the node's own
// copy the kernel keeps while a lock covers it.
func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	a, fresh, err := n.currentAttr(ctx)
	if err != nil {
		n.mu.Lock()
		open, last := n.opens > 0, n.attr
		n.mu.Unlock()
		if api.CodeOf(err) != api.CodeNotFound || !open {
			return n.gw.errno("getattr", err)
		}
		// fstat of an open file another name change removed: what this
		// mount last knew, with no links left.
		last.Nlink = 0
		n.gw.fillAttr(last, &out.Attr)
		return 0
	}
	n.gw.fillAttr(a, &out.Attr)
	if !fresh {
		out.SetTimeout(n.gw.ns.attrTTL(n.ino()))
	}
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok {
		if err := n.truncate(ctx, size); err != nil {
			return n.gw.errno("setattr", err)
		}
	}
	req := api.SetAttrReq{Ino: n.ino()}
	if mode, ok := in.GetMode(); ok {
		req.Valid |= api.SetMode
		req.Mode = mode
	}
	if uid, ok := in.GetUID(); ok {
		req.Valid |= api.SetUID
		req.UID = uid
	}
	if gid, ok := in.GetGID(); ok {
		req.Valid |= api.SetGID
		req.GID = gid
	}
	if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
		req.Valid |= api.SetAtimeNow
	} else if t, ok := in.GetATime(); ok {
		req.Valid |= api.SetAtime
		req.Atime = t.UnixNano()
	}
	if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
		req.Valid |= api.SetMtimeNow
	} else if t, ok := in.GetMTime(); ok {
		req.Valid |= api.SetMtime
		req.Mtime = t.UnixNano()
	}
	if t, ok := in.GetCTime(); ok {
		req.Valid |= api.SetCtime
		req.Ctime = t.UnixNano()
	}
	// HANDLE_KILLPRIV_V2 leaves clearing set-ID bits to us. The kernel
	// flags a truncate by a caller without CAP_FSETID, passes a chown on,
	// and sends a SETATTR with nothing in it where it would have cleared
	// them itself: before a write or fallocate by such a caller, or for
	// chown(-1, -1).
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 || req.Valid&(api.SetUID|api.SetGID) != 0 ||
		in.Valid&^(fuse.FATTR_FH|fuse.FATTR_LOCKOWNER) == 0 {
		req.Valid |= api.SetKillSUIDGID
	}
	var attr api.Attr
	if req.Valid != 0 {
		var err error
		if attr, err = n.setAttr(ctx, req); err != nil {
			return n.gw.errno("setattr", err)
		}
	} else {
		var r api.AttrResp
		if err := n.gw.metaCall(ctx, api.OpGetAttr, api.InoReq{Ino: n.ino()}, &r); err != nil {
			return n.gw.errno("setattr", err)
		}
		attr = r.Attr
	}
	n.gw.fillAttr(attr, &out.Attr)
	return 0
}

// setAttr has meta change the file's attributes and keeps this mount's
// caches in step: the new attributes, or none if the call failed (meta
// may have made the change anyway).
func (n *node) setAttr(ctx context.Context, req api.SetAttrReq) (api.Attr, error) {
	var r api.AttrResp
	if err := n.gw.metaCall(ctx, api.OpSetAttr, req, &r); err != nil {
		n.gw.ns.forgetAttr(n.ino())
		return api.Attr{}, err
	}
	n.gw.ns.changedAttr(r.Attr)
	n.refresh(r.Attr, nil)
	return r.Attr, nil
}

// truncate sets the file size: objects first, then meta, so that growing
// the file later never shows bytes from before the cut.
func (n *node) truncate(ctx context.Context, size uint64) error {
	if !n.isReg() {
		return api.Errorf(api.CodeIsDir, "not a regular file")
	}
	l, err := n.getLayout(ctx)
	if err != nil {
		return err
	}
	// Unflushed writes must reach meta before the cut so meta's size and
	// ours agree afterwards.
	if err := n.flushSize(ctx); err != nil {
		return err
	}
	if err := n.useObjects(ctx, l, int64(size)); err != nil {
		return err
	}
	if err := n.gw.truncateObjects(ctx, l, int64(size)); err != nil {
		return err
	}
	var r api.AttrResp
	if err := n.gw.metaCall(ctx, api.OpSetAttr, api.SetAttrReq{Ino: n.ino(), Valid: api.SetSize, Size: size}, &r); err != nil {
		n.gw.ns.forgetAttr(n.ino())
		return err
	}
	n.gw.ns.changedAttr(r.Attr)
	n.mu.Lock()
	n.attr = r.Attr
	n.attrAt = time.Now()
	n.dataGen++
	n.mu.Unlock()
	return nil
}

func (n *node) isReg() bool { return n.StableAttr().Mode == api.ModeReg }

// getLayout returns the file's layout, asking meta once if this node was
// made from a directory listing.
func (n *node) getLayout(ctx context.Context) (*api.Layout, error) {
	n.mu.Lock()
	l := n.layout
	n.mu.Unlock()
	if l != nil {
		return l, nil
	}
	var r api.LayoutResp
	if err := n.gw.metaCall(ctx, api.OpGetLayout, api.LayoutReq{Ino: n.ino()}, &r); err != nil {
		return nil, err
	}
	if err := r.Layout.ValidateFile(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.layout = &r.Layout
	n.mu.Unlock()
	return &r.Layout, nil
}

func (n *node) create(ctx context.Context, name string, req api.CreateReq, out *fuse.EntryOut) (*fs.Inode, api.EntryResp, error) {
	if err := api.ValidName(name); err != nil {
		return nil, api.EntryResp{}, err
	}
	req.Parent = n.ino()
	req.Name = name
	req.Caller = caller(ctx)
	var r api.EntryResp
	if err := n.gw.metaCall(ctx, api.OpCreate, req, &r); err != nil {
		n.gw.ns.forgetNames(n.ino())
		return nil, r, err
	}
	n.gw.ns.added(n.ino(), name, r)
	n.changed(r.Parent)
	inode := n.newChild(ctx, name, r, out)
	n.gw.ns.entryTTLs(n.ino(), name, out)
	return inode, r, nil
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	req := api.CreateReq{Mode: mode&^api.ModeType | api.ModeReg, Exclusive: flags&syscall.O_EXCL != 0}
	inode, r, err := n.create(ctx, name, req, out)
	if err != nil {
		return nil, nil, 0, n.gw.errno("create", err)
	}
	ch := inode.Operations().(*node)
	if r.Created {
		// A new file has no xattrs: its first write needs no getxattr.
		ch.noteNoCaps()
	}
	if !r.Created && flags&syscall.O_TRUNC != 0 && r.Attr.Size > 0 {
		if err := ch.truncate(ctx, 0); err != nil {
			return nil, nil, 0, n.gw.errno("create", err)
		}
		out.Attr.Size = 0
	}
	return inode, ch.opened(flags), openFlags(flags), 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	inode, _, err := n.create(ctx, name, api.CreateReq{Mode: mode&^api.ModeType | api.ModeDir, Exclusive: true}, out)
	return inode, n.gw.errno("mkdir", err)
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	inode, _, err := n.create(ctx, name, api.CreateReq{Mode: mode, Rdev: dev, Exclusive: true}, out)
	return inode, n.gw.errno("mknod", err)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(target) > api.MaxSymlinkLen {
		return nil, syscall.ENAMETOOLONG
	}
	if !utf8.ValidString(target) {
		return nil, syscall.EINVAL // the wire carries targets as UTF-8
	}
	inode, _, err := n.create(ctx, name, api.CreateReq{Mode: api.ModeLink | 0o777, Target: target, Exclusive: true}, out)
	return inode, n.gw.errno("symlink", err)
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	var r api.ReadlinkResp
	if err := n.gw.metaCall(ctx, api.OpReadlink, api.InoReq{Ino: n.ino()}, &r); err != nil {
		return nil, n.gw.errno("readlink", err)
	}
	return []byte(r.Target), 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if err := api.ValidName(name); err != nil {
		return nil, n.gw.errno("link", err)
	}
	var r api.EntryResp
	req := api.LinkReq{Ino: target.EmbeddedInode().StableAttr().Ino, NewParent: n.ino(), NewName: name}
	if err := n.gw.metaCall(ctx, api.OpLink, req, &r); err != nil {
		n.gw.ns.forgetNames(n.ino())
		n.gw.ns.forgetAttr(req.Ino)
		return nil, n.gw.errno("link", err)
	}
	n.gw.ns.added(n.ino(), name, r)
	n.changed(r.Parent)
	if tn, ok := target.(*node); ok {
		tn.refresh(r.Attr, r.Layout) // its link count: go-fuse keeps this node
	}
	inode := n.newChild(ctx, name, r, out)
	n.gw.ns.entryTTLs(n.ino(), name, out)
	return inode, 0
}

// openChild reports whether this mount has the named child open.
func (n *node) openChild(name string) *node {
	ch := n.GetChild(name)
	if ch == nil {
		return nil
	}
	cn, ok := ch.Operations().(*node)
	if !ok {
		return nil
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.opens == 0 {
		return nil
	}
	return cn
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	open := n.openChild(name)
	var r api.UnlinkResp
	if err := n.gw.metaCall(ctx, api.OpUnlink, api.UnlinkReq{Parent: n.ino(), Name: name, KeepOpen: open != nil}, &r); err != nil {
		n.gw.ns.forgetNames(n.ino())
		return n.gw.errno("unlink", err)
	}
	n.gw.ns.removed(n.ino(), name, r.Ino, r.Parent)
	n.changed(r.Parent)
	n.staleChild(name)
	if open != nil && r.Nlink == 0 {
		open.markOrphan(ctx, r.Ino)
	}
	return 0
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	var r api.UnlinkResp
	if err := n.gw.metaCall(ctx, api.OpUnlink, api.UnlinkReq{Parent: n.ino(), Name: name, Dir: true}, &r); err != nil {
		n.gw.ns.forgetNames(n.ino())
		return n.gw.errno("rmdir", err)
	}
	n.gw.ns.removed(n.ino(), name, r.Ino, r.Parent)
	n.changed(r.Parent)
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if err := api.ValidName(newName); err != nil {
		return n.gw.errno("rename", err)
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	var open *node
	if flags&api.RenameExchange == 0 {
		open = np.openChild(newName)
	}
	req := api.RenameReq{Parent: n.ino(), Name: name, NewParent: np.ino(), NewName: newName, Flags: flags, KeepOpen: open != nil}
	src, dst := n.childIno(name), np.childIno(newName)
	var r api.RenameResp
	if err := n.gw.metaCall(ctx, api.OpRename, req, &r); err != nil {
		n.gw.ns.forgetNames(n.ino())
		n.gw.ns.forgetNames(np.ino())
		n.gw.ns.forgetAttr(src)
		n.gw.ns.forgetAttr(dst)
		return n.gw.errno("rename", err)
	}
	n.gw.ns.renamed(n.ino(), name, np.ino(), newName, src, dst, flags&api.RenameExchange != 0)
	n.stale()
	np.stale()
	n.staleChild(name)
	np.staleChild(newName)
	if open != nil && r.Replaced != 0 && r.ReplacedNlink == 0 {
		open.markOrphan(ctx, r.Replaced)
	}
	return 0
}

// childIno is the inode of the named child as the kernel knows it, 0 if it
// does not.
func (n *node) childIno(name string) uint64 {
	if ch := n.GetChild(name); ch != nil {
		return ch.StableAttr().Ino
	}
	return 0
}

// markOrphan records that meta keeps this open file's inode (its last name
// is gone) until this mount releases it. If the file was closed while the
// unlink was on its way, the release happens now: decided under mu, so
// Release and this never both miss it.
func (n *node) markOrphan(ctx context.Context, ino uint64) {
	n.mu.Lock()
	if n.ino() != ino {
		n.mu.Unlock()
		return
	}
	closed := n.opens == 0
	n.orphan = !closed
	n.mu.Unlock()
	if closed {
		n.releaseOrphan(ctx)
	}
}

func (n *node) releaseOrphan(ctx context.Context) {
	if err := n.gw.metaCall(ctx, api.OpReleaseOrphan, api.InoReq{Ino: n.ino()}, nil); err != nil {
		n.gw.log.Warn("releasing unlinked file", "ino", n.ino(), "err", err)
	}
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	var value []byte
	switch attr {
	case api.NATSXattr:
		value = []byte(n.gw.cfg.NATSURL)
	case api.FSNameXattr:
		value = []byte(n.gw.cfg.FSName)
	case api.LockXattr:
		value = []byte(n.gw.ns.lockState(n.ino()))
	default:
		caps := attr == capsXattr
		if caps && n.knownNoCaps() {
			return 0, syscall.ENODATA
		}
		var r api.XattrResp
		if err := n.gw.metaCall(ctx, api.OpGetXattr, api.XattrReq{Ino: n.ino(), Name: attr}, &r); err != nil {
			if caps && api.CodeOf(err) == api.CodeNoAttr {
				n.noteNoCaps()
			}
			return 0, n.gw.errno("getxattr", err)
		}
		value = r.Value
	}
	if len(dest) == 0 {
		return uint32(len(value)), 0
	}
	if len(dest) < len(value) {
		return uint32(len(value)), syscall.ERANGE
	}
	return uint32(copy(dest, value)), 0
}

// capsXattr is the file capability xattr the kernel checks on every write.
const capsXattr = "security.capability"

// noCapsWindow is how long meta's word that a file has no capability xattr
// is taken: another mount setting one changes the file's ctime, which
// recalls the lock covering it (and the word with it), and otherwise the
// window bounds it.
const noCapsWindow = time.Second

// knownNoCaps reports whether meta said recently enough that the file has
// no security.capability xattr.
func (n *node) knownNoCaps() bool {
	n.mu.Lock()
	at, cover := n.noCapsAt, coverOf(n.attr)
	n.mu.Unlock()
	return !at.IsZero() && time.Since(at) < noCapsWindow && !n.gw.ns.recalledSince(cover, at)
}

// noteNoCaps records that the file has no security.capability xattr now.
func (n *node) noteNoCaps() {
	n.mu.Lock()
	n.noCapsAt = time.Now()
	n.mu.Unlock()
}

// xattrsChanged drops what this node knows of its xattrs and attributes.
func (n *node) xattrsChanged() {
	n.mu.Lock()
	n.attrAt = time.Time{} // ctime
	n.noCapsAt = time.Time{}
	n.mu.Unlock()
	n.gw.ns.forgetAttr(n.ino())
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	err := n.gw.metaCall(ctx, api.OpSetXattr, api.XattrReq{Ino: n.ino(), Name: attr, Value: data, Flags: flags}, nil)
	n.xattrsChanged() // even a failed call may have reached meta
	if err != nil {
		return n.gw.errno("setxattr", err)
	}
	if attr == api.LayoutXattr && n.isReg() {
		// setstripe on an empty file replaced its objects.
		n.mu.Lock()
		n.layout = nil
		n.mu.Unlock()
	}
	return 0
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	err := n.gw.metaCall(ctx, api.OpRemoveXattr, api.XattrReq{Ino: n.ino(), Name: attr}, nil)
	n.xattrsChanged()
	return n.gw.errno("removexattr", err)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var r api.XattrResp
	if err := n.gw.metaCall(ctx, api.OpListXattr, api.XattrReq{Ino: n.ino()}, &r); err != nil {
		return 0, n.gw.errno("listxattr", err)
	}
	slices.Sort(r.Names)
	var b strings.Builder
	for _, name := range r.Names {
		b.WriteString(name)
		b.WriteByte(0)
	}
	if len(dest) == 0 {
		return uint32(b.Len()), 0
	}
	if len(dest) < b.Len() {
		return uint32(b.Len()), syscall.ERANGE
	}
	return uint32(copy(dest, b.String())), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var r api.StatFSResp
	if err := n.gw.metaCall(ctx, api.OpStatFS, api.Empty{}, &r); err != nil {
		return n.gw.errno("statfs", err)
	}
	const bsize = 4096
	var total, free, avail uint64
	for _, o := range r.OSTs {
		total += o.Total
		free += o.Free
		avail += o.Avail
	}
	out.Bsize = bsize
	out.Frsize = bsize
	out.Blocks = total / bsize
	out.Bfree = free / bsize
	out.Bavail = avail / bsize
	out.Files = r.MaxInodes
	if r.MaxInodes > r.Inodes {
		out.Ffree = r.MaxInodes - r.Inodes
	}
	out.NameLen = api.MaxNameLen
	return 0
}
