package meta

import (
	"context"
	"slices"
	"sort"

	"github.com/stria/stria/api"
)

// checkLayoutRequest validates a layout as a user asked for it, against the
// OSTs live now. Objects in a request are ignored (meta assigns them), so a
// layout read from one file can be given to another.
func checkLayoutRequest(l api.Layout, live []api.OSTInfo) (api.Layout, error) {
	l.Objects = nil
	if l.Pool != "" {
		return l, api.Errorf(api.CodeInvalid, "pool %q: OST pools are not supported", l.Pool)
	}
	count := len(live)
	if count == 0 {
		count = -1 // nothing to check the stripe count against
	}
	if err := l.ValidateRequest(count); err != nil {
		return l, err
	}
	if l.StripeOffset >= 0 && len(live) > 0 && !slices.ContainsFunc(live, func(o api.OSTInfo) bool { return o.Index == uint32(l.StripeOffset) }) {
		return l, api.Errorf(api.CodeInvalid, "stripe offset: OST %d is not available", l.StripeOffset)
	}
	return l, nil
}

// effectiveLayout is the layout new files in dir get: the nearest ancestor's
// default (dir's own included), else the file system default.
func effectiveLayout(get func(uint64) (*inode, error), dir *inode) (api.Layout, error) {
	for range maxDepth {
		if dir.DefLayout != nil {
			l := *dir.DefLayout
			l.Objects = nil
			return l, nil
		}
		if dir.Ino == api.RootIno || dir.Parent == 0 {
			return api.DefaultLayout(), nil
		}
		var err error
		if dir, err = get(dir.Parent); err != nil {
			return api.Layout{}, err
		}
	}
	return api.Layout{}, api.Errorf(api.CodeCorrupt, "directory chain does not reach the root")
}

// resolveLayout turns a requested layout into a file's concrete one: count
// distinct live OSTs in index order, starting at the offset (or a rotating
// start for -1), wrapping. Every object gets the id objID (the file's inode
// number for its first layout). With strict (the caller asked for this
// layout), a stripe count above the live OSTs or an offset naming an OST that
// is not live is an error; for an inherited default the count shrinks to the
// live OSTs and the next live OST is used.
func (s *Server) resolveLayout(want api.Layout, live []api.OSTInfo, objID uint64, strict bool) (api.Layout, error) {
	n := len(live)
	if n == 0 {
		return api.Layout{}, api.Errorf(api.CodeUnavailable, "no OSTs registered")
	}
	count := int(want.StripeCount)
	if count == -1 {
		count = n
	}
	if count < 1 {
		return api.Layout{}, api.Errorf(api.CodeInvalid, "stripe count %d", want.StripeCount)
	}
	if count > n {
		if strict {
			return api.Layout{}, api.Errorf(api.CodeInvalid, "stripe count %d is larger than the %d OSTs available", count, n)
		}
		// An inherited default asking for more OSTs than are up now (some
		// are down): stripe over those there are, as Lustre does, rather
		// than refuse every create below that directory.
		count = n
	}
	if want.StripeSize == 0 || want.StripeSize%api.StripeSizeUnit != 0 {
		return api.Layout{}, api.Errorf(api.CodeInvalid, "stripe size %d is not a multiple of 64 KiB", want.StripeSize)
	}
	var start int
	if want.StripeOffset < 0 {
		start = int(s.rr.Add(1)-1) % n
	} else {
		off := uint32(want.StripeOffset)
		start = sort.Search(n, func(i int) bool { return live[i].Index >= off })
		if start == n {
			start = 0
		}
		if strict && live[start].Index != off {
			return api.Layout{}, api.Errorf(api.CodeInvalid, "stripe offset: OST %d is not available", off)
		}
	}
	objs := make([]api.StripeObject, count)
	for i := range objs {
		objs[i] = api.StripeObject{OST: live[(start+i)%n].Index, ObjID: objID}
	}
	return api.Layout{
		StripeCount:  int32(count),
		StripeSize:   want.StripeSize,
		StripeOffset: int32(objs[0].OST),
		Pool:         want.Pool,
		DoMSize:      s.domForNew(want),
		Objects:      objs,
	}, nil
}

// layoutintent instantiates a file's deferred stripe objects before the
// caller writes to them (api.LayoutIntentReq): from then on they are
// destroyed with the file. The change is not durable before the reply,
// like the file's creation: a crash of meta within the syncer's grace may
// forget it, as it may forget the file, and leave objects that nothing
// destroys.
func (s *Server) layoutintent(ctx context.Context, r *api.LayoutIntentReq) (api.Empty, error) {
	if err := checkIno(r.Ino, "layoutintent"); err != nil {
		return api.Empty{}, err
	}
	// Objects instantiated already (every write after the first, from
	// any mount) need no change: answer without one.
	in, err := s.st.getInode(s.st.db, r.Ino)
	if err != nil {
		return api.Empty{}, err
	}
	if err := intentFor(in, r.ObjID); err != nil || !in.LazyObjects {
		return api.Empty{}, err
	}
	return api.Empty{}, s.mutate(ctx, nil, func(t *txn) error {
		in, err := t.get(r.Ino)
		if err != nil {
			return err
		}
		if err := intentFor(in, r.ObjID); err != nil || !in.LazyObjects {
			return err
		}
		in.LazyObjects = false
		// Written without put: whether objects exist is no directory
		// lock's business (a mount that still sees them deferred asks
		// again), so the change needs no barrier, which put's coverage
		// of the parent would ask for. Nothing else of the inode changes.
		t.writeInode(in)
		return nil
	})
}

// intentFor checks that in is a regular file whose layout's first object
// is objID.
func intentFor(in *inode, objID uint64) error {
	if !in.isReg() || in.Layout == nil || len(in.Layout.Objects) == 0 {
		return api.Errorf(api.CodeInvalid, "inode %d is not a regular file with stripe objects", in.Ino)
	}
	if id := in.Layout.Objects[0].ObjID; id != objID {
		return api.Errorf(api.CodeInvalid, "inode %d's layout has changed (objects %d, not %d)", in.Ino, id, objID)
	}
	return nil
}

func (s *Server) getlayout(_ context.Context, r *api.LayoutReq) (api.LayoutResp, error) {
	if err := checkIno(r.Ino, "getlayout"); err != nil {
		return api.LayoutResp{}, err
	}
	snap := s.st.db.NewSnapshot()
	defer snap.Close()
	in, err := s.st.getInode(snap, r.Ino)
	if err != nil {
		return api.LayoutResp{}, err
	}
	switch {
	case in.isReg():
		if in.Layout == nil {
			return api.LayoutResp{}, api.Errorf(api.CodeCorrupt, "file %d has no layout", r.Ino)
		}
		return api.LayoutResp{Layout: *in.Layout}, nil
	case in.isDir():
		if in.DefLayout != nil {
			return api.LayoutResp{Layout: *in.DefLayout}, nil
		}
		l, err := effectiveLayout(func(ino uint64) (*inode, error) { return s.st.getInode(snap, ino) }, in)
		return api.LayoutResp{Layout: l, Inherited: true}, err
	}
	return api.LayoutResp{}, api.Errorf(api.CodeNoAttr, "inode %d has no layout: not a file or directory", r.Ino)
}

func (s *Server) setlayout(ctx context.Context, r *api.LayoutReq) (api.LayoutResp, error) {
	if err := checkIno(r.Ino, "setlayout"); err != nil {
		return api.LayoutResp{}, err
	}
	l, err := s.setLayout(ctx, r.Ino, r.Layout, 0)
	return api.LayoutResp{Layout: l}, err
}

// setLayout sets a directory's default layout, or re-lays out an empty
// regular file. xflags are setxattr flags when it comes from the layout xattr.
func (s *Server) setLayout(ctx context.Context, ino uint64, want api.Layout, xflags uint32) (api.Layout, error) {
	live := s.reg.List()
	l, err := checkLayoutRequest(want, live)
	if err != nil {
		return api.Layout{}, err
	}
	var out api.Layout
	err = s.mutate(ctx, []uint64{s.coverGuess(ino)}, func(t *txn) error {
		in, err := t.get(ino)
		if err != nil {
			return err
		}
		switch {
		case in.isDir():
			if xflags&api.XattrCreate != 0 && in.DefLayout != nil {
				return api.Errorf(api.CodeExists, "directory %d already has a default layout", ino)
			}
			if xflags&api.XattrReplace != 0 && in.DefLayout == nil {
				return api.Errorf(api.CodeNoAttr, "directory %d has no default layout", ino)
			}
			in.DefLayout = &l
			out = l
		case in.isReg():
			if xflags&api.XattrCreate != 0 {
				return api.Errorf(api.CodeExists, "file %d already has a layout", ino)
			}
			if in.Size > 0 {
				return api.Errorf(api.CodeExists, "file already has data: its layout cannot change")
			}
			objID := in.Ino
			if in.Layout != nil {
				// A new layout gets objects of a new id: an object once
				// on the destroy queue is never used again, so a destroy
				// in flight can never remove what a later layout wrote.
				objID = t.newObjectID()
				t.dropObjects(in)
				t.b.Delete(domKey(in.Ino), nil)
			}
			resolved, err := s.resolveLayout(l, live, objID, true)
			if err != nil {
				return err
			}
			in.setLayout(resolved)
			out = resolved
		default:
			return api.Errorf(api.CodeInvalid, "inode %d is not a file or directory: no layout", ino)
		}
		in.Ctime = t.now
		t.put(in)
		t.record(api.ChangeRecord{Type: api.ChangeLayout, Ino: in.Ino, Mode: in.Mode})
		return nil
	})
	return out, err
}

// clearDefaultLayout removes a directory's own default layout.
func (s *Server) clearDefaultLayout(ctx context.Context, ino uint64) error {
	return s.mutate(ctx, []uint64{s.coverGuess(ino)}, func(t *txn) error {
		in, err := t.get(ino)
		if err != nil {
			return err
		}
		if in.isReg() {
			return api.Errorf(api.CodePerm, "a file's layout cannot be removed")
		}
		if in.DefLayout == nil {
			return api.Errorf(api.CodeNoAttr, "inode %d has no default layout", ino)
		}
		in.DefLayout = nil
		in.Ctime = t.now
		t.put(in)
		t.record(api.ChangeRecord{Type: api.ChangeLayout, Ino: in.Ino, Mode: in.Mode})
		return nil
	})
}
