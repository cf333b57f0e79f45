package meta

import (
	"context"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stria/stria/api"
)

// maxXattrList bounds the total size of one inode's xattr names (each plus
// a NUL), as Linux bounds a listxattr reply (XATTR_LIST_MAX).
const maxXattrList = 64 << 10

func checkXattrName(name string) error {
	switch {
	case name == "":
		return api.Errorf(api.CodeInvalid, "empty xattr name")
	case len(name) > api.MaxXattrNameLen:
		return api.Errorf(api.CodeRange, "xattr name of %d bytes exceeds %d", len(name), api.MaxXattrNameLen)
	case strings.IndexByte(name, 0) >= 0:
		return api.Errorf(api.CodeInvalid, "xattr name contains NUL")
	}
	return nil
}

func (s *Server) getxattr(_ context.Context, r *api.XattrReq) (api.XattrResp, error) {
	if err := checkIno(r.Ino, "getxattr"); err != nil {
		return api.XattrResp{}, err
	}
	if err := checkXattrName(r.Name); err != nil {
		return api.XattrResp{}, err
	}
	if len(r.Value) != 0 || r.Flags != 0 {
		return api.XattrResp{}, api.Errorf(api.CodeInvalid, "getxattr takes no value or flags")
	}
	snap := s.st.db.NewSnapshot()
	defer snap.Close()
	in, err := s.st.getInode(snap, r.Ino)
	if err != nil {
		return api.XattrResp{}, err
	}
	if r.Name == api.LayoutXattr {
		var l *api.Layout
		switch {
		case in.isReg():
			l = in.Layout
		case in.isDir():
			l = in.DefLayout
		}
		if l == nil {
			return api.XattrResp{}, api.Errorf(api.CodeNoAttr, "inode %d has no %s", r.Ino, api.LayoutXattr)
		}
		return api.XattrResp{Value: l.XattrValue()}, nil
	}
	v, err := get(snap, xattrKey(r.Ino, r.Name))
	if err != nil {
		return api.XattrResp{}, err
	}
	if v == nil {
		return api.XattrResp{}, api.Errorf(api.CodeNoAttr, "inode %d has no xattr %q", r.Ino, r.Name)
	}
	return api.XattrResp{Value: v}, nil
}

func (s *Server) setxattr(ctx context.Context, r *api.XattrReq) (api.Empty, error) {
	if err := checkIno(r.Ino, "setxattr"); err != nil {
		return api.Empty{}, err
	}
	if err := checkXattrName(r.Name); err != nil {
		return api.Empty{}, err
	}
	if r.Flags&^uint32(api.XattrCreate|api.XattrReplace) != 0 {
		return api.Empty{}, api.Errorf(api.CodeInvalid, "unknown setxattr flags %#x", r.Flags)
	}
	if r.Flags == api.XattrCreate|api.XattrReplace {
		return api.Empty{}, api.Errorf(api.CodeInvalid, "setxattr: create and replace together")
	}
	if len(r.Value) > api.MaxXattrSize {
		return api.Empty{}, api.Errorf(api.CodeTooBig, "xattr value of %d bytes exceeds %d", len(r.Value), api.MaxXattrSize)
	}
	if r.Name == api.LayoutXattr {
		l, err := api.ParseLayout(r.Value)
		if err != nil {
			return api.Empty{}, err
		}
		_, err = s.setLayout(ctx, r.Ino, l, r.Flags)
		return api.Empty{}, err
	}
	return api.Empty{}, s.mutate(ctx, []uint64{s.coverGuess(r.Ino)}, func(t *txn) error {
		in, err := t.get(r.Ino)
		if err != nil {
			return err
		}
		k := xattrKey(r.Ino, r.Name)
		old, err := get(t.s.db, k)
		if err != nil {
			return err
		}
		switch {
		case old != nil && r.Flags&api.XattrCreate != 0:
			return api.Errorf(api.CodeExists, "inode %d already has xattr %q", r.Ino, r.Name)
		case old == nil && r.Flags&api.XattrReplace != 0:
			return api.Errorf(api.CodeNoAttr, "inode %d has no xattr %q", r.Ino, r.Name)
		case old == nil:
			names, err := xattrNames(t.s.db, r.Ino)
			if err != nil {
				return err
			}
			total := len(r.Name) + 1
			for _, n := range names {
				total += len(n) + 1
			}
			if total > maxXattrList {
				return api.Errorf(api.CodeNoSpace, "the xattr names of inode %d would exceed %d bytes", r.Ino, maxXattrList)
			}
		}
		t.b.Set(k, r.Value, nil)
		in.Ctime = t.now
		in.NoXattrs = false
		t.put(in)
		t.record(api.ChangeRecord{Type: api.ChangeXattr, Ino: in.Ino, Name: r.Name, Mode: in.Mode})
		return nil
	})
}

func xattrNames(r pebble.Reader, ino uint64) ([]string, error) {
	p := xattrPrefix(ino)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	names := []string{}
	for ok := it.First(); ok; ok = it.Next() {
		names = append(names, string(it.Key()[len(p):]))
	}
	return names, it.Close()
}

func (s *Server) listxattr(_ context.Context, r *api.XattrReq) (api.XattrResp, error) {
	if err := checkIno(r.Ino, "listxattr"); err != nil {
		return api.XattrResp{}, err
	}
	if r.Name != "" || len(r.Value) != 0 || r.Flags != 0 {
		return api.XattrResp{}, api.Errorf(api.CodeInvalid, "listxattr takes only an inode")
	}
	snap := s.st.db.NewSnapshot()
	defer snap.Close()
	if _, err := s.st.getInode(snap, r.Ino); err != nil {
		return api.XattrResp{}, err
	}
	names, err := xattrNames(snap, r.Ino)
	return api.XattrResp{Names: names}, err
}

func (s *Server) removexattr(ctx context.Context, r *api.XattrReq) (api.Empty, error) {
	if err := checkIno(r.Ino, "removexattr"); err != nil {
		return api.Empty{}, err
	}
	if err := checkXattrName(r.Name); err != nil {
		return api.Empty{}, err
	}
	if len(r.Value) != 0 || r.Flags != 0 {
		return api.Empty{}, api.Errorf(api.CodeInvalid, "removexattr takes no value or flags")
	}
	if r.Name == api.LayoutXattr {
		return api.Empty{}, s.clearDefaultLayout(ctx, r.Ino)
	}
	return api.Empty{}, s.mutate(ctx, []uint64{s.coverGuess(r.Ino)}, func(t *txn) error {
		in, err := t.get(r.Ino)
		if err != nil {
			return err
		}
		k := xattrKey(r.Ino, r.Name)
		old, err := get(t.s.db, k)
		if err != nil {
			return err
		}
		if old == nil {
			return api.Errorf(api.CodeNoAttr, "inode %d has no xattr %q", r.Ino, r.Name)
		}
		t.b.Delete(k, nil)
		in.Ctime = t.now
		t.put(in)
		t.record(api.ChangeRecord{Type: api.ChangeXattr, Ino: in.Ino, Name: r.Name, Mode: in.Mode})
		return nil
	})
}
