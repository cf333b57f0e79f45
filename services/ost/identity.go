package ost

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrIndexConflict: the OST index is bound in etcd to another OST's UUID.
var ErrIndexConflict = errors.New("OST index already claimed by another OST")

// identityFile is DataDir/ost.json.
const identityFile = "ost.json"

// identity is what makes a data directory one particular OST.
type identity struct {
	UUID   string `json:"uuid"`
	Index  int64  `json:"index"` // -1 until claimed in etcd
	FSName string `json:"fsname"`
}

// loadIdentity reads DataDir/ost.json, creating it with a fresh UUID and no
// index on first start. The UUID is made durable before any claim in etcd,
// so a crash between the claim and the write of the index finds its own
// claim again on restart.
func loadIdentity(dir, fsname string) (identity, error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		id := identity{UUID: newUUID(), Index: -1, FSName: fsname}
		return id, saveIdentity(dir, id)
	}
	if err != nil {
		return identity{}, fmt.Errorf("reading OST identity: %w", err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return identity{}, fmt.Errorf("OST identity %s is damaged: %w", path, err)
	}
	if id.UUID == "" {
		return identity{}, fmt.Errorf("OST identity %s has no uuid", path)
	}
	if id.FSName != "" && id.FSName != fsname {
		return identity{}, fmt.Errorf("data directory %s belongs to file system %q, not %q", dir, id.FSName, fsname)
	}
	id.FSName = fsname
	return id, nil
}

// saveIdentity writes ost.json atomically and durably.
func saveIdentity(dir string, id identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding OST identity: %w", err)
	}
	path := filepath.Join(dir, identityFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("writing OST identity: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing OST identity: %w", err)
	}
	return syncDir(dir)
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// claimIndex binds this OST to its index in etcd: the index in ost.json,
// else the configured one, else the lowest free one. It retries while etcd
// is unreachable and fails at once on a conflict.
func (s *Server) claimIndex(ctx context.Context) (uint32, error) {
	want := s.id.Index
	if want < 0 && s.cfg.Index >= 0 {
		want = int64(s.cfg.Index)
	}
	var idx uint32
	err := s.retry(ctx, "claiming OST index", func() error {
		if want >= 0 {
			idx = uint32(want)
			return s.claim(ctx, idx)
		}
		var err error
		idx, err = s.allocate(ctx)
		return err
	})
	if err != nil {
		return 0, err
	}
	if s.id.Index != int64(idx) {
		s.id.Index = int64(idx)
		if err := saveIdentity(s.cfg.DataDir, s.id); err != nil {
			return 0, err
		}
	}
	return idx, nil
}

// claim binds idx to this OST's UUID unless another OST holds it.
func (s *Server) claim(ctx context.Context, idx uint32) error {
	key := api.OSTIndexKey(s.cfg.FSName, idx)
	resp, err := s.etcd.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, s.id.UUID)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("claiming OST index %d: %w", idx, err)
	}
	if resp.Succeeded {
		s.log.Info("claimed OST index", "index", idx, "uuid", s.id.UUID)
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 1 && string(kvs[0].Value) == s.id.UUID {
		return nil
	}
	holder := "?"
	if len(kvs) == 1 {
		holder = string(kvs[0].Value)
	}
	return permanent(fmt.Errorf("%w: index %d of file system %q belongs to OST %s, this OST (data dir %s) is %s; two OSTs cannot share an index",
		ErrIndexConflict, idx, s.cfg.FSName, holder, s.cfg.DataDir, s.id.UUID))
}

// allocate finds this OST's claim left by an earlier, interrupted start, or
// claims the lowest free index.
func (s *Server) allocate(ctx context.Context) (uint32, error) {
	prefix := api.EtcdPrefix(s.cfg.FSName) + "ostidx/"
	for {
		resp, err := s.etcd.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return 0, fmt.Errorf("listing OST indexes: %w", err)
		}
		used := make(map[uint32]bool, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			n, err := strconv.ParseUint(strings.TrimPrefix(string(kv.Key), prefix), 10, 32)
			if err != nil {
				continue
			}
			if string(kv.Value) == s.id.UUID {
				return uint32(n), nil
			}
			used[uint32(n)] = true
		}
		var idx uint32
		for used[idx] {
			idx++
		}
		key := api.OSTIndexKey(s.cfg.FSName, idx)
		tr, err := s.etcd.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, s.id.UUID)).
			Commit()
		if err != nil {
			return 0, fmt.Errorf("claiming OST index %d: %w", idx, err)
		}
		if tr.Succeeded {
			s.log.Info("allocated OST index", "index", idx, "uuid", s.id.UUID)
			return idx, nil
		}
		// Another OST took it meanwhile: look again.
	}
}

// permanentError marks an error retry must not retry.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return permanentError{err} }

// retry runs op until it succeeds, fails permanently, or ctx ends, backing
// off from 100 ms to 5 s between attempts.
func (s *Server) retry(ctx context.Context, what string, op func() error) error {
	delay := 100 * time.Millisecond
	for {
		err := op()
		var perm permanentError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &perm):
			return perm.err
		case ctx.Err() != nil:
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		s.log.Warn(what+" failed; retrying", "err", err, "in", delay)
		if !sleepCtx(ctx, delay) {
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// sleepCtx waits d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// register keeps api.OSTInfo at api.OSTKey under a lease until ctx ends,
// re-granting and re-registering whenever the lease is lost, and revokes
// the lease at the end so the OST disappears at once.
func (s *Server) register(ctx context.Context, idx uint32, addr string, socket bool) {
	key := api.OSTKey(s.cfg.FSName, idx)
	info := api.OSTInfo{Index: idx, UUID: s.id.UUID, Addr: addr}
	if socket {
		info.Socket, info.Host = s.cfg.Socket, api.HostID()
	}
	val, _ := json.Marshal(info) // plain struct
	ttl := int64((s.cfg.LeaseTTL + time.Second - 1) / time.Second)
	for ctx.Err() == nil {
		var lease clientv3.LeaseID
		err := s.retry(ctx, "registering OST", func() error {
			g, err := s.etcd.Grant(ctx, ttl)
			if err != nil {
				return fmt.Errorf("lease grant: %w", err)
			}
			if _, err := s.etcd.Put(ctx, key, string(val), clientv3.WithLease(g.ID)); err != nil {
				s.revoke(ctx, g.ID)
				return fmt.Errorf("put %s: %w", key, err)
			}
			lease = g.ID
			return nil
		})
		if err != nil {
			return // ctx ended
		}
		kach, err := s.etcd.KeepAlive(ctx, lease)
		if err != nil {
			s.log.Warn("lease keep-alive failed; re-registering", "err", err)
			s.revoke(ctx, lease)
			continue
		}
		s.log.Info("registered", "key", key, "addr", addr, "lease", fmt.Sprintf("%x", int64(lease)))
		s.readyOnce.Do(func() { close(s.ready) })
		last := time.Now()
		for range kach {
			last = time.Now()
		}
		s.revoke(ctx, lease)
		if ctx.Err() == nil {
			s.log.Warn("registration lease lost; re-registering", "key", key, "last_keepalive", time.Since(last))
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}
}

// revoke drops a lease, even once ctx has ended.
func (s *Server) revoke(ctx context.Context, lease clientv3.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.etcd.Revoke(rctx, lease); err != nil && ctx.Err() != nil {
		s.log.Warn("revoking registration lease", "err", err)
	}
}
