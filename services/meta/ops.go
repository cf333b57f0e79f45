package meta

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stria/stria/api"
)

// Each operation validates its request completely, then (for changes) runs
// inside Server.mutate: every precondition is checked before the first
// write, so a refused request changes nothing.

func checkIno(ino uint64, what string) error {
	if ino == 0 {
		return api.Errorf(api.CodeInvalid, "%s: inode number 0", what)
	}
	return nil
}

// attrOf copies an inode's attributes for a reply.
func attrOf(in *inode) *api.Attr {
	a := in.Attr
	return &a
}

func entryOf(in *inode) api.EntryResp {
	r := api.EntryResp{Attr: in.Attr}
	if in.isReg() {
		r.Layout = cloneLayout(in.Layout)
	}
	return r
}

func (s *Server) lookup(_ context.Context, r *api.LookupReq) (api.EntryResp, error) {
	if err := checkIno(r.Parent, "lookup"); err != nil {
		return api.EntryResp{}, err
	}
	if err := api.ValidName(r.Name); err != nil {
		return api.EntryResp{}, err
	}
	snap := s.st.db.NewSnapshot()
	defer snap.Close()
	d, ok, err := s.st.getDent(snap, r.Parent, r.Name)
	if err != nil {
		return api.EntryResp{}, err
	}
	if !ok {
		p, err := s.st.getInode(snap, r.Parent)
		if err != nil {
			return api.EntryResp{}, err
		}
		if !p.isDir() {
			return api.EntryResp{}, api.Errorf(api.CodeNotDir, "inode %d is not a directory", r.Parent)
		}
		return api.EntryResp{}, api.Errorf(api.CodeNotFound, "no entry %q in directory %d", r.Name, r.Parent)
	}
	in, err := s.st.getInode(snap, d.Ino)
	if err != nil {
		return api.EntryResp{}, err
	}
	return entryOf(in), nil
}

func (s *Server) getattr(_ context.Context, r *api.InoReq) (api.AttrResp, error) {
	if err := checkIno(r.Ino, "getattr"); err != nil {
		return api.AttrResp{}, err
	}
	in, err := s.st.getInode(s.st.db, r.Ino)
	if err != nil {
		return api.AttrResp{}, err
	}
	return api.AttrResp{Attr: in.Attr}, nil
}

func (s *Server) readlink(_ context.Context, r *api.InoReq) (api.ReadlinkResp, error) {
	if err := checkIno(r.Ino, "readlink"); err != nil {
		return api.ReadlinkResp{}, err
	}
	in, err := s.st.getInode(s.st.db, r.Ino)
	if err != nil {
		return api.ReadlinkResp{}, err
	}
	if !in.isLink() {
		return api.ReadlinkResp{}, api.Errorf(api.CodeInvalid, "inode %d is not a symlink", r.Ino)
	}
	return api.ReadlinkResp{Target: in.Target}, nil
}

// changeType is the changelog record type of creating an inode of mode.
func changeType(mode uint32) string {
	switch mode & api.ModeType {
	case api.ModeReg:
		return api.ChangeCreate
	case api.ModeDir:
		return api.ChangeMkdir
	case api.ModeLink:
		return api.ChangeSymlink
	}
	return api.ChangeMknod
}

func (s *Server) create(ctx context.Context, r *api.CreateReq) (api.EntryResp, error) {
	if err := checkIno(r.Parent, "create"); err != nil {
		return api.EntryResp{}, err
	}
	if err := api.ValidName(r.Name); err != nil {
		return api.EntryResp{}, err
	}
	if r.Mode&^uint32(api.ModeType|0o7777) != 0 {
		return api.EntryResp{}, api.Errorf(api.CodeInvalid, "mode %#o has unknown bits", r.Mode)
	}
	typ := r.Mode & api.ModeType
	switch typ {
	case api.ModeReg, api.ModeDir, api.ModeLink, api.ModeFIFO, api.ModeSock, api.ModeChr, api.ModeBlk:
	default:
		return api.EntryResp{}, api.Errorf(api.CodeInvalid, "mode %#o: unknown file type", r.Mode)
	}
	if typ == api.ModeLink {
		switch {
		case r.Target == "":
			return api.EntryResp{}, api.Errorf(api.CodeInvalid, "symlink needs a target")
		case len(r.Target) > api.MaxSymlinkLen:
			return api.EntryResp{}, api.Errorf(api.CodeNameTooLong, "symlink target of %d bytes exceeds %d", len(r.Target), api.MaxSymlinkLen)
		case containsNUL(r.Target):
			return api.EntryResp{}, api.Errorf(api.CodeInvalid, "symlink target contains NUL")
		}
	} else if r.Target != "" {
		return api.EntryResp{}, api.Errorf(api.CodeInvalid, "only a symlink has a target")
	}
	live := s.reg.List()
	var want *api.Layout
	if r.Layout != nil {
		if typ != api.ModeReg {
			return api.EntryResp{}, api.Errorf(api.CodeInvalid, "only a regular file has a layout")
		}
		l, err := checkLayoutRequest(*r.Layout, live)
		if err != nil {
			return api.EntryResp{}, err
		}
		want = &l
	}
	var resp api.EntryResp
	err := s.mutate(ctx, []uint64{r.Parent}, func(t *txn) error {
		parent, err := t.dir(r.Parent)
		if err != nil {
			return err
		}
		if parent.Nlink == 0 {
			return api.Errorf(api.CodeNotFound, "directory %d has been removed", r.Parent)
		}
		d, exists, err := t.dent(r.Parent, r.Name)
		if err != nil {
			return err
		}
		if exists {
			if r.Exclusive || typ != api.ModeReg || d.Type != typeOf(api.ModeReg) {
				return api.Errorf(api.CodeExists, "%q exists in directory %d", r.Name, r.Parent)
			}
			in, err := t.get(d.Ino)
			if err != nil {
				return err
			}
			resp = entryOf(in)
			return nil
		}
		in := t.newInode()
		in.Mode = r.Mode
		in.UID, in.GID = r.Caller.UID, r.Caller.GID
		if parent.Mode&0o2000 != 0 {
			in.GID = parent.GID
			if typ == api.ModeDir {
				in.Mode |= 0o2000
			}
		}
		in.Atime, in.Mtime, in.Ctime = t.now, t.now, t.now
		in.Nlink = 1
		in.Parent = parent.Ino
		switch typ {
		case api.ModeDir:
			in.Nlink = 2
			in.Size = dirSize
			parent.Nlink++
			t.dirsMade = append(t.dirsMade, in.Ino) // empty: known whole
		case api.ModeLink:
			in.Target = r.Target
			in.Size = uint64(len(r.Target))
		case api.ModeChr, api.ModeBlk:
			in.Rdev = r.Rdev
		case api.ModeReg:
			l := want
			strict := true
			if l == nil {
				eff, err := effectiveLayout(t.get, parent)
				if err != nil {
					return err
				}
				l, strict = &eff, false
			}
			resolved, err := s.resolveLayout(*l, live, in.Ino, strict)
			if err != nil {
				return err
			}
			in.setLayout(resolved)
		}
		parent.Mtime, parent.Ctime = t.now, t.now
		t.put(parent)
		t.put(in)
		t.setDent(parent.Ino, r.Name, dent{Ino: in.Ino, Type: typeOf(in.Mode)})
		t.record(api.ChangeRecord{Type: changeType(in.Mode), Ino: in.Ino, Parent: parent.Ino, Name: r.Name, Mode: in.Mode})
		resp = entryOf(in)
		resp.Created = true
		resp.Parent = attrOf(parent)
		return nil
	})
	return resp, err
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

func (s *Server) link(ctx context.Context, r *api.LinkReq) (api.EntryResp, error) {
	if err := checkIno(r.Ino, "link"); err != nil {
		return api.EntryResp{}, err
	}
	if err := checkIno(r.NewParent, "link"); err != nil {
		return api.EntryResp{}, err
	}
	if err := api.ValidName(r.NewName); err != nil {
		return api.EntryResp{}, err
	}
	var resp api.EntryResp
	err := s.mutate(ctx, []uint64{r.NewParent, s.coverGuess(r.Ino)}, func(t *txn) error {
		in, err := t.get(r.Ino)
		if err != nil {
			return err
		}
		if in.isDir() {
			return api.Errorf(api.CodePerm, "inode %d is a directory: no hard links", r.Ino)
		}
		if in.Nlink == 0 {
			return api.Errorf(api.CodeNotFound, "inode %d has been unlinked", r.Ino)
		}
		np, err := t.dir(r.NewParent)
		if err != nil {
			return err
		}
		if np.Nlink == 0 {
			return api.Errorf(api.CodeNotFound, "directory %d has been removed", r.NewParent)
		}
		if _, exists, err := t.dent(r.NewParent, r.NewName); err != nil {
			return err
		} else if exists {
			return api.Errorf(api.CodeExists, "%q exists in directory %d", r.NewName, r.NewParent)
		}
		in.Nlink++
		in.Parent = 0 // several links now: no one directory covers it
		in.Ctime = t.now
		np.Mtime, np.Ctime = t.now, t.now
		t.put(in)
		t.put(np)
		t.setDent(np.Ino, r.NewName, dent{Ino: in.Ino, Type: typeOf(in.Mode)})
		t.record(api.ChangeRecord{Type: api.ChangeLink, Ino: in.Ino, Parent: np.Ino, Name: r.NewName, Mode: in.Mode})
		resp = entryOf(in)
		resp.Parent = attrOf(np)
		return nil
	})
	return resp, err
}

// isEmpty reports whether directory ino has no entries.
func (t *txn) isEmpty(ino uint64) (bool, error) {
	if n, known := t.s.names.size(ino); known {
		return n == 0, nil
	}
	p := dentPrefix(ino)
	it, err := t.s.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return false, err
	}
	empty := !it.First()
	return empty, it.Close()
}

// dropLink removes one link of a non-directory. At zero links it becomes an
// orphan if still open (keepOpen), else it is deleted and its stripe objects
// queued for destruction, in the same batch.
func (t *txn) dropLink(in *inode, keepOpen bool) error {
	in.Nlink--
	in.Ctime = t.now
	if in.Nlink == 0 {
		in.Parent = 0
	}
	if in.Nlink > 0 {
		t.put(in)
		return nil
	}
	if keepOpen {
		t.put(in)
		t.b.Set(orphanKey(in.Ino), nil, nil)
		return nil
	}
	t.dropObjects(in)
	return t.deleteInode(in)
}

func (s *Server) unlink(ctx context.Context, r *api.UnlinkReq) (api.UnlinkResp, error) {
	if err := checkIno(r.Parent, "unlink"); err != nil {
		return api.UnlinkResp{}, err
	}
	if err := api.ValidName(r.Name); err != nil {
		return api.UnlinkResp{}, err
	}
	var resp api.UnlinkResp
	err := s.mutate(ctx, []uint64{r.Parent}, func(t *txn) error {
		p, err := t.dir(r.Parent)
		if err != nil {
			return err
		}
		d, ok, err := t.dent(r.Parent, r.Name)
		if err != nil {
			return err
		}
		if !ok {
			return api.Errorf(api.CodeNotFound, "no entry %q in directory %d", r.Name, r.Parent)
		}
		in, err := t.get(d.Ino)
		if err != nil {
			return err
		}
		if in.Ino == api.RootIno {
			return api.Errorf(api.CodeBusy, "cannot remove the root directory")
		}
		if r.Dir {
			if !in.isDir() {
				return api.Errorf(api.CodeNotDir, "%q is not a directory", r.Name)
			}
			empty, err := t.isEmpty(in.Ino)
			if err != nil {
				return err
			}
			if !empty {
				return api.Errorf(api.CodeNotEmpty, "directory %q is not empty", r.Name)
			}
		} else if in.isDir() {
			return api.Errorf(api.CodeIsDir, "%q is a directory", r.Name)
		}
		t.delDent(p.Ino, r.Name)
		p.Mtime, p.Ctime = t.now, t.now
		typ := api.ChangeUnlink
		if in.isDir() {
			typ = api.ChangeRmdir
			p.Nlink--
			in.Nlink = 0
			if err := t.deleteInode(in); err != nil {
				return err
			}
		} else if err := t.dropLink(in, r.KeepOpen); err != nil {
			return err
		}
		t.put(p)
		t.record(api.ChangeRecord{Type: typ, Ino: in.Ino, Parent: p.Ino, Name: r.Name, Mode: in.Mode})
		resp = api.UnlinkResp{Ino: in.Ino, Nlink: in.Nlink, Parent: attrOf(p)}
		return nil
	})
	return resp, err
}

// inSubtree reports whether dir ino lies in the subtree of directory top
// (ino == top included), walking up through parent pointers.
func inSubtree(get func(uint64) (*inode, error), ino, top uint64) (bool, error) {
	for range maxDepth {
		if ino == top {
			return true, nil
		}
		if ino == api.RootIno {
			return false, nil
		}
		in, err := get(ino)
		if err != nil {
			return false, err
		}
		ino = in.Parent
	}
	return false, api.Errorf(api.CodeCorrupt, "directory chain above %d does not reach the root", ino)
}

// moved records that an inode's entry moved to directory to: a directory's
// parent, or a singly linked non-directory's only directory, is now to.
func moved(in *inode, to uint64) {
	if in.isDir() || in.Parent != 0 {
		in.Parent = to
	}
}

// maxDepth bounds walks up the tree; a longer chain means a damaged store.
const maxDepth = 1 << 16

func (s *Server) rename(ctx context.Context, r *api.RenameReq) (api.RenameResp, error) {
	if err := checkIno(r.Parent, "rename"); err != nil {
		return api.RenameResp{}, err
	}
	if err := checkIno(r.NewParent, "rename"); err != nil {
		return api.RenameResp{}, err
	}
	if err := api.ValidName(r.Name); err != nil {
		return api.RenameResp{}, err
	}
	if err := api.ValidName(r.NewName); err != nil {
		return api.RenameResp{}, err
	}
	if r.Flags&^uint32(api.RenameNoReplace|api.RenameExchange) != 0 {
		return api.RenameResp{}, api.Errorf(api.CodeInvalid, "unknown rename flags %#x", r.Flags)
	}
	if r.Flags == api.RenameNoReplace|api.RenameExchange {
		return api.RenameResp{}, api.Errorf(api.CodeInvalid, "rename: noreplace and exchange together")
	}
	var resp api.RenameResp
	err := s.mutate(ctx, []uint64{r.Parent, r.NewParent}, func(t *txn) error {
		p, err := t.dir(r.Parent)
		if err != nil {
			return err
		}
		np, err := t.dir(r.NewParent)
		if err != nil {
			return err
		}
		sd, ok, err := t.dent(r.Parent, r.Name)
		if err != nil {
			return err
		}
		if !ok {
			return api.Errorf(api.CodeNotFound, "no entry %q in directory %d", r.Name, r.Parent)
		}
		dd, dstExists, err := t.dent(r.NewParent, r.NewName)
		if err != nil {
			return err
		}
		if np.Nlink == 0 {
			return api.Errorf(api.CodeNotFound, "directory %d has been removed", r.NewParent)
		}
		src, err := t.get(sd.Ino)
		if err != nil {
			return err
		}
		if r.Flags&api.RenameExchange != 0 {
			if !dstExists {
				return api.Errorf(api.CodeNotFound, "no entry %q in directory %d to exchange with", r.NewName, r.NewParent)
			}
			return s.exchange(t, r, p, np, src, dd)
		}
		if dstExists && dd.Ino == src.Ino {
			return nil // the same file under both names: nothing to do
		}
		if dstExists && r.Flags&api.RenameNoReplace != 0 {
			return api.Errorf(api.CodeExists, "%q exists in directory %d", r.NewName, r.NewParent)
		}
		var dst *inode
		if dstExists {
			if dst, err = t.get(dd.Ino); err != nil {
				return err
			}
			switch {
			case src.isDir() && !dst.isDir():
				return api.Errorf(api.CodeNotDir, "cannot replace non-directory %q with a directory", r.NewName)
			case !src.isDir() && dst.isDir():
				return api.Errorf(api.CodeIsDir, "cannot replace directory %q with a non-directory", r.NewName)
			case dst.isDir():
				empty, err := t.isEmpty(dst.Ino)
				if err != nil {
					return err
				}
				if !empty {
					return api.Errorf(api.CodeNotEmpty, "directory %q is not empty", r.NewName)
				}
			}
		}
		if src.isDir() && p.Ino != np.Ino {
			loop, err := inSubtree(t.get, np.Ino, src.Ino)
			if err != nil {
				return err
			}
			if loop {
				return api.Errorf(api.CodeInvalid, "cannot move directory %q into its own subtree", r.Name)
			}
		}
		// All checks passed: write.
		t.delDent(p.Ino, r.Name)
		t.setDent(np.Ino, r.NewName, dent{Ino: src.Ino, Type: typeOf(src.Mode)})
		if dst != nil {
			if dst.isDir() {
				np.Nlink--
				dst.Nlink = 0
				if err := t.deleteInode(dst); err != nil {
					return err
				}
				t.record(api.ChangeRecord{Type: api.ChangeRmdir, Ino: dst.Ino, Parent: np.Ino, Name: r.NewName, Mode: dst.Mode})
			} else {
				if err := t.dropLink(dst, r.KeepOpen); err != nil {
					return err
				}
				t.record(api.ChangeRecord{Type: api.ChangeUnlink, Ino: dst.Ino, Parent: np.Ino, Name: r.NewName, Mode: dst.Mode})
			}
			resp = api.RenameResp{Replaced: dst.Ino, ReplacedNlink: dst.Nlink}
		}
		if p.Ino != np.Ino {
			moved(src, np.Ino)
			if src.isDir() {
				p.Nlink--
				np.Nlink++
			}
		}
		src.Ctime = t.now
		p.Mtime, p.Ctime = t.now, t.now
		np.Mtime, np.Ctime = t.now, t.now
		t.put(src)
		t.put(p)
		t.put(np)
		t.record(api.ChangeRecord{Type: api.ChangeRename, Ino: src.Ino, Parent: p.Ino, Name: r.Name, NewParent: np.Ino, NewName: r.NewName, Mode: src.Mode})
		return nil
	})
	return resp, err
}

// exchange swaps two existing entries (RENAME_EXCHANGE).
func (s *Server) exchange(t *txn, r *api.RenameReq, p, np, src *inode, dd dent) error {
	if dd.Ino == src.Ino {
		return nil
	}
	dst, err := t.get(dd.Ino)
	if err != nil {
		return err
	}
	if p.Ino != np.Ino {
		// src moves under np, dst under p: neither may land in its own subtree.
		if src.isDir() {
			loop, err := inSubtree(t.get, np.Ino, src.Ino)
			if err != nil {
				return err
			}
			if loop {
				return api.Errorf(api.CodeInvalid, "cannot move directory %q into its own subtree", r.Name)
			}
		}
		if dst.isDir() {
			loop, err := inSubtree(t.get, p.Ino, dst.Ino)
			if err != nil {
				return err
			}
			if loop {
				return api.Errorf(api.CodeInvalid, "cannot move directory %q into its own subtree", r.NewName)
			}
		}
	}
	t.setDent(p.Ino, r.Name, dent{Ino: dst.Ino, Type: typeOf(dst.Mode)})
	t.setDent(np.Ino, r.NewName, dent{Ino: src.Ino, Type: typeOf(src.Mode)})
	if p.Ino != np.Ino {
		moved(src, np.Ino)
		moved(dst, p.Ino)
		if src.isDir() {
			p.Nlink--
			np.Nlink++
		}
		if dst.isDir() {
			np.Nlink--
			p.Nlink++
		}
	}
	src.Ctime, dst.Ctime = t.now, t.now
	p.Mtime, p.Ctime = t.now, t.now
	np.Mtime, np.Ctime = t.now, t.now
	t.put(src)
	t.put(dst)
	t.put(p)
	t.put(np)
	t.record(api.ChangeRecord{Type: api.ChangeRename, Ino: src.Ino, Parent: p.Ino, Name: r.Name, NewParent: np.Ino, NewName: r.NewName, Mode: src.Mode})
	t.record(api.ChangeRecord{Type: api.ChangeRename, Ino: dst.Ino, Parent: np.Ino, Name: r.NewName, NewParent: p.Ino, NewName: r.Name, Mode: dst.Mode})
	return nil
}

const setAttrKnown = api.SetMode | api.SetUID | api.SetGID | api.SetSize | api.SetAtime |
	api.SetMtime | api.SetAtimeNow | api.SetMtimeNow | api.SetCtime | api.SetKillSUIDGID

func (s *Server) setattr(ctx context.Context, r *api.SetAttrReq) (api.AttrResp, error) {
	if err := checkIno(r.Ino, "setattr"); err != nil {
		return api.AttrResp{}, err
	}
	if r.Valid&^uint32(setAttrKnown) != 0 {
		return api.AttrResp{}, api.Errorf(api.CodeInvalid, "unknown setattr bits %#x", r.Valid&^uint32(setAttrKnown))
	}
	if r.Valid&api.SetSize != 0 && r.Size > 1<<62 {
		return api.AttrResp{}, api.Errorf(api.CodeTooBig, "size %d is too large", r.Size)
	}
	var resp api.AttrResp
	err := s.mutate(ctx, []uint64{s.coverGuess(r.Ino)}, func(t *txn) error {
		in, err := t.get(r.Ino)
		if err != nil {
			return err
		}
		if r.Valid&api.SetSize != 0 {
			if in.isDir() {
				return api.Errorf(api.CodeIsDir, "inode %d is a directory", r.Ino)
			}
			if !in.isReg() {
				return api.Errorf(api.CodeInvalid, "inode %d is not a regular file", r.Ino)
			}
		}
		v := r.Valid
		kill := v&api.SetKillSUIDGID != 0 && in.isReg()
		if v&^api.SetKillSUIDGID == 0 && (!kill || api.KillSUIDGID(in.Mode) == in.Mode) {
			resp = api.AttrResp{Attr: in.Attr}
			return nil
		}
		if v&api.SetMode != 0 {
			in.Mode = in.Mode&api.ModeType | r.Mode&0o7777
		}
		if v&api.SetUID != 0 {
			in.UID = r.UID
		}
		if v&api.SetGID != 0 {
			in.GID = r.GID
		}
		if v&api.SetSize != 0 {
			if err := t.truncateDoM(in, r.Size); err != nil {
				return err
			}
			in.Size = r.Size
		}
		switch {
		case v&api.SetAtimeNow != 0:
			in.Atime = t.now
		case v&api.SetAtime != 0:
			in.Atime = r.Atime
		}
		switch {
		case v&api.SetMtimeNow != 0:
			in.Mtime = t.now
		case v&api.SetMtime != 0:
			in.Mtime = r.Mtime
		}
		if kill {
			in.Mode = api.KillSUIDGID(in.Mode)
		}
		in.Ctime = t.now
		if v&api.SetCtime != 0 {
			in.Ctime = r.Ctime
		}
		t.put(in)
		typ := api.ChangeSetattr
		if v&api.SetSize != 0 {
			typ = api.ChangeTrunc
		}
		t.record(api.ChangeRecord{Type: typ, Ino: in.Ino, Mode: in.Mode, Size: in.Size})
		resp = api.AttrResp{Attr: in.Attr}
		return nil
	})
	return resp, err
}

func (s *Server) updatesize(ctx context.Context, r *api.UpdateSizeReq) (api.AttrResp, error) {
	if err := checkIno(r.Ino, "updatesize"); err != nil {
		return api.AttrResp{}, err
	}
	if r.Size > 1<<62 {
		return api.AttrResp{}, api.Errorf(api.CodeTooBig, "size %d is too large", r.Size)
	}
	var resp api.AttrResp
	// Sizes and mtimes that writes produced are data, whose durability
	// fsync promises (its OpSync follows this); close(2) promises none.
	err := s.mutate(ctx, []uint64{s.coverGuess(r.Ino)}, func(t *txn) error {
		in, err := t.get(r.Ino)
		if err != nil {
			return err
		}
		if in.isDir() {
			return api.Errorf(api.CodeIsDir, "inode %d is a directory", r.Ino)
		}
		if !in.isReg() {
			return api.Errorf(api.CodeInvalid, "inode %d is not a regular file", r.Ino)
		}
		if r.Size <= in.Size && r.Mtime <= in.Mtime {
			resp = api.AttrResp{Attr: in.Attr}
			return nil // nothing new
		}
		in.Size = max(in.Size, r.Size)
		in.Mtime = max(in.Mtime, r.Mtime)
		in.Ctime = t.now
		t.put(in)
		// Data changed: there is no dedicated record type, so it is a
		// setattr record carrying the new size.
		t.record(api.ChangeRecord{Type: api.ChangeSetattr, Ino: in.Ino, Mode: in.Mode, Size: in.Size})
		resp = api.AttrResp{Attr: in.Attr}
		return nil
	})
	return resp, err
}

// defaultReadDirLimit is the page size when the request gives none (or one
// out of range).
const defaultReadDirLimit = 1024

// readdir returns the reply already encoded: every entry is encoded once, so
// the page can stop exactly where it would outgrow one NATS message.
func (s *Server) readdir(_ context.Context, r *api.ReadDirReq) (json.RawMessage, error) {
	if err := checkIno(r.Ino, "readdir"); err != nil {
		return nil, err
	}
	if len(r.After) > api.MaxNameLen {
		return nil, api.Errorf(api.CodeNameTooLong, "readdir cursor of %d bytes", len(r.After))
	}
	limit := r.Limit
	if limit < 1 || limit > api.MaxReadDirPage {
		limit = defaultReadDirLimit
	}
	const head, tail = `{"entries":[`, `],"more":false}`
	budget := int(s.nc.MaxPayload()) - len(head) - len(tail) - 16
	snap := s.st.db.NewSnapshot()
	defer snap.Close()
	dir, err := s.st.getInode(snap, r.Ino)
	if err != nil {
		return nil, err
	}
	if !dir.isDir() {
		return nil, api.Errorf(api.CodeNotDir, "inode %d is not a directory", r.Ino)
	}
	p := dentPrefix(r.Ino)
	lower := p
	if r.After != "" {
		lower = append(dentKey(r.Ino, r.After), 0) // strictly after: names hold no NUL
	}
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := append(make([]byte, 0, 64<<10), head...)
	n, more := 0, false
	for ok := it.First(); ok; ok = it.Next() {
		if n >= limit {
			more = true
			break
		}
		d, err := decodeDent(it.Value())
		if err != nil {
			return nil, err
		}
		in, err := s.st.getInode(snap, d.Ino)
		if err != nil {
			return nil, err
		}
		e, err := json.Marshal(api.DirEntry{Name: string(it.Key()[len(p):]), Attr: in.Attr})
		if err != nil {
			return nil, err
		}
		if len(out)+len(e)+1 > budget {
			if n == 0 {
				return nil, api.Errorf(api.CodeTooBig, "directory entry does not fit in a reply")
			}
			more = true
			break
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, e...)
		n++
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	out = append(out, `],"more":`...)
	out = strconv.AppendBool(out, more)
	return append(out, '}'), nil
}

func (s *Server) sync(context.Context, *api.Empty) (api.Empty, error) {
	return api.Empty{}, s.st.syncWAL()
}

func (s *Server) releaseOrphan(ctx context.Context, r *api.InoReq) (api.Empty, error) {
	if err := checkIno(r.Ino, "releaseorphan"); err != nil {
		return api.Empty{}, err
	}
	return api.Empty{}, s.mutate(ctx, nil, func(t *txn) error {
		in, err := t.get(r.Ino)
		if err != nil {
			return err
		}
		mark, err := get(t.s.db, orphanKey(r.Ino))
		if err != nil {
			return err
		}
		if mark == nil {
			return api.Errorf(api.CodeInvalid, "inode %d is not an orphan", r.Ino)
		}
		t.dropObjects(in)
		t.b.Delete(orphanKey(in.Ino), nil)
		return t.deleteInode(in)
	})
}
