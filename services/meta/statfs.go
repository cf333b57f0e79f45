package meta

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// bytesPerInode estimates the metadata space one more inode takes, for
// MaxInodes.
const bytesPerInode = 512

func (s *Server) statfs(ctx context.Context, _ *api.Empty) (api.StatFSResp, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(s.cfg.DataDir, &fs); err != nil {
		return api.StatFSResp{}, fmt.Errorf("statfs of the metadata store: %w", err)
	}
	bsize := uint64(fs.Bsize)
	resp := api.StatFSResp{
		Inodes:     s.st.inodes.Load(),
		MetaTotal:  fs.Blocks * bsize,
		MetaFree:   fs.Bfree * bsize,
		MetaAvail:  fs.Bavail * bsize,
		NameMax:    api.MaxNameLen,
		StripeSize: api.DefaultStripeSize,
	}
	resp.MaxInodes = resp.Inodes + resp.MetaAvail/bytesPerInode
	if root, err := s.st.getInode(s.st.db, api.RootIno); err == nil && root.DefLayout != nil {
		resp.StripeSize = root.DefLayout.StripeSize
	}

	ctx, cancel := context.WithTimeout(ctx, s.cfg.OSTTimeout)
	defer cancel()
	live := s.reg.List()
	resp.OSTs = make([]api.OSTStat, len(live))
	var wg sync.WaitGroup
	for i, o := range live {
		wg.Go(func() {
			st := api.OSTStat{Index: o.Index, Addr: o.Addr}
			fs, err := s.ost.Statfs(ctx, o.Addr)
			if err != nil {
				st.Error = api.AsError(err).Error()
			} else {
				st.Up = true
				st.Total, st.Free, st.Avail, st.Objects = fs.Total, fs.Free, fs.Avail, fs.Objects
			}
			resp.OSTs[i] = st
		})
	}
	wg.Wait()
	// OSTs that joined once (their index is bound) but are not registered
	// now are down: list them too.
	known, err := s.knownOSTs(ctx)
	if err != nil {
		s.log.Debug("listing known OSTs", "err", err)
	}
	for _, idx := range known {
		if _, ok := s.reg.Lookup(idx); !ok {
			resp.OSTs = append(resp.OSTs, api.OSTStat{Index: idx, Error: "not registered"})
		}
	}
	return resp, nil
}

// knownOSTs lists the OST indexes ever bound in etcd.
func (s *Server) knownOSTs(ctx context.Context) ([]uint32, error) {
	prefix := api.EtcdPrefix(s.cfg.FSName) + "ostidx/"
	resp, err := s.etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	var out []uint32
	for _, kv := range resp.Kvs {
		if n, err := strconv.ParseUint(strings.TrimPrefix(string(kv.Key), prefix), 10, 32); err == nil {
			out = append(out, uint32(n))
		}
	}
	return out, nil
}
