package meta

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/stria/stria/api"
)

// Data-on-MDT (Lustre's DoM): the first Layout.DoMSize bytes of a file live
// here, in one store record per file (B<ino>) holding the region's bytes as
// far as they were written. A small file is then one inode and one record:
// no OST object to create, open, read from a cold disk or destroy. The
// region follows the rules of OST data: writes change neither size nor
// mtime (the gateway's UpdateSize does), they are applied at once and
// durable after the next OpSync (fsync), and truncation cuts them in the
// same change that sets the size.
//
// The store's own space is shared with metadata, so DoM yields first, as
// Lustre's dom_threshold_free_mb: new files get no region while the store's
// file system has less than domMinFree available, and a write to an
// existing region is refused (ENOSPC) when it would leave less than
// domWriteReserve — a metadata store that runs out of space fails whole.
const (
	domMinFree      = 1 << 30
	domWriteReserve = 128 << 20
	// domSpaceAge is how long a free-space reading is trusted.
	domSpaceAge = 100 * time.Millisecond
)

// freeSpace caches the available bytes of the store's file system.
type freeSpace struct {
	dir string

	mu    sync.Mutex
	at    time.Time
	avail uint64
	err   error
}

func (f *freeSpace) get() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.at) >= domSpaceAge {
		var st syscall.Statfs_t
		f.err = syscall.Statfs(f.dir, &st)
		f.avail, f.at = st.Bavail*uint64(st.Bsize), now
	}
	return f.avail, f.err
}

// domForNew is the DoM size a new file of layout l gets: l's, or none while
// space is short.
func (s *Server) domForNew(l api.Layout) uint32 {
	if l.DoMSize == 0 {
		return 0
	}
	if avail, err := s.space.get(); err != nil || avail < domMinFree {
		return 0
	}
	return l.DoMSize
}

// domRegion checks that in is a regular file whose DoM region covers
// [off, off+n).
func domRegion(in *inode, off int64, n int) error {
	switch {
	case in.isDir():
		return api.Errorf(api.CodeIsDir, "inode %d is a directory", in.Ino)
	case !in.isReg() || in.Layout == nil:
		return api.Errorf(api.CodeInvalid, "inode %d is not a regular file", in.Ino)
	case off < 0 || n < 0 || off+int64(n) > int64(in.Layout.DoMSize):
		return api.Errorf(api.CodeInvalid, "range [%d, %d) is outside the %d bytes of inode %d kept on meta", off, off+int64(n), in.Layout.DoMSize, in.Ino)
	}
	return nil
}

func (s *Server) domwrite(ctx context.Context, r *api.DoMWriteReq) (api.Empty, error) {
	if err := checkIno(r.Ino, "domwrite"); err != nil {
		return api.Empty{}, err
	}
	if len(r.Data) == 0 || len(r.Data) > api.MaxDoMRequest {
		return api.Empty{}, api.Errorf(api.CodeInvalid, "domwrite of %d bytes: must be 1 to %d", len(r.Data), api.MaxDoMRequest)
	}
	if avail, err := s.space.get(); err != nil {
		return api.Empty{}, api.Errorf(api.CodeIO, "free space of the metadata store: %v", err)
	} else if avail < uint64(len(r.Data))+domWriteReserve {
		return api.Empty{}, api.Errorf(api.CodeNoSpace, "the metadata store's disk is nearly full (%d bytes available)", avail)
	}
	// No change barrier: the region is data, which no directory lock
	// covers (the size it may grow is UpdateSize's).
	return api.Empty{}, s.mutate(ctx, nil, func(t *txn) error {
		in, err := t.get(r.Ino)
		if err != nil {
			return err
		}
		if err := domRegion(in, r.Off, len(r.Data)); err != nil {
			return err
		}
		// Mutations run one at a time under the store's lock, so the
		// committed record is the latest.
		old, err := get(t.s.db, domKey(r.Ino))
		if err != nil {
			return err
		}
		end := int(r.Off) + len(r.Data)
		v := old
		if end > len(v) {
			v = make([]byte, end)
			copy(v, old)
		}
		copy(v[r.Off:], r.Data)
		t.b.Set(domKey(r.Ino), v, nil)
		return nil
	})
}

func (s *Server) domread(_ context.Context, r *api.DoMReadReq) (api.DoMReadResp, error) {
	if err := checkIno(r.Ino, "domread"); err != nil {
		return api.DoMReadResp{}, err
	}
	if r.Len < 0 || r.Len > api.MaxDoMRequest {
		return api.DoMReadResp{}, api.Errorf(api.CodeInvalid, "domread of %d bytes: must be 0 to %d", r.Len, api.MaxDoMRequest)
	}
	in, err := s.st.getInode(s.st.db, r.Ino)
	if err != nil {
		return api.DoMReadResp{}, err
	}
	if err := domRegion(in, r.Off, r.Len); err != nil {
		return api.DoMReadResp{}, err
	}
	v, err := get(s.st.db, domKey(r.Ino))
	if err != nil || r.Off >= int64(len(v)) {
		return api.DoMReadResp{}, err
	}
	return api.DoMReadResp{Data: v[r.Off:min(int(r.Off)+r.Len, len(v))]}, nil
}

// truncateDoM cuts ino's region to a file size of size, in t.
func (t *txn) truncateDoM(in *inode, size uint64) error {
	if in.Layout == nil || in.Layout.DoMSize == 0 {
		return nil
	}
	if size == 0 {
		t.b.Delete(domKey(in.Ino), nil)
		return nil
	}
	v, err := get(t.s.db, domKey(in.Ino))
	if err != nil || uint64(len(v)) <= size {
		return err
	}
	t.b.Set(domKey(in.Ino), v[:size], nil)
	return nil
}
