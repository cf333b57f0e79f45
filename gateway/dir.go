package gateway

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stria/stria/api"
)

// readDirPage is how many entries one readdir RPC fetches.
const readDirPage = 1024

// dirHandle streams a directory from meta a page at a time, so listing a
// directory of millions of entries holds one page in memory.
type dirHandle struct {
	n *node

	pos   uint64 // entries produced so far, "." and ".." included
	page  []api.DirEntry
	next  int    // index in page of the next entry
	after string // name to continue after
	more  bool
	last  *api.DirEntry // the entry Readdirent returned last
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileLookuper     = (*dirHandle)(nil)
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{n: n, more: true}, 0, 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.last = nil
	switch d.pos {
	case 0:
		d.pos++
		return &fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.n.ino(), Off: d.pos}, 0
	case 1:
		d.pos++
		return &fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: api.RootIno, Off: d.pos}, 0
	}
	if d.next >= len(d.page) {
		if !d.more {
			return nil, 0
		}
		seq := d.n.gw.ns.begin()
		var r api.ReadDirResp
		if err := d.n.gw.metaCall(ctx, api.OpReadDir, api.ReadDirReq{Ino: d.n.ino(), After: d.after, Limit: readDirPage}, &r); err != nil {
			return nil, d.n.gw.errno("readdirent", err)
		}
		d.n.gw.ns.learnListing(seq, d.n.ino(), r.Entries)
		d.page, d.next, d.more = r.Entries, 0, r.More
		if len(d.page) == 0 {
			d.more = false
			return nil, 0
		}
	}
	e := &d.page[d.next]
	d.next++
	d.after = e.Name
	d.pos++
	d.last = e
	return &fuse.DirEntry{Name: e.Name, Mode: e.Attr.Mode & api.ModeType, Ino: e.Attr.Ino, Off: d.pos}, 0
}

// Seekdir restarts the listing and skips to off; offsets are positions in
// the name-ordered stream.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.pos, d.page, d.next, d.after, d.more = 0, nil, 0, "", true
	for d.pos < off {
		de, errno := d.Readdirent(ctx)
		if errno != 0 {
			return errno
		}
		if de == nil {
			break
		}
	}
	return 0
}

// Lookup serves READDIRPLUS from the page just read: no extra RPC per entry.
// The kernel keeps the entry while the directory's lock covers it, as it
// does a lookup's.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if d.last == nil || d.last.Name != name {
		return d.n.Lookup(ctx, name, out)
	}
	inode := d.n.newChild(ctx, name, api.EntryResp{Attr: d.last.Attr}, out)
	d.n.gw.ns.entryTTLs(d.n.ino(), name, out)
	return inode, 0
}
