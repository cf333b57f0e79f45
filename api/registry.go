package api

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// OSTInfo is what an OST registers in etcd, under a lease, while it serves.
type OSTInfo struct {
	Index uint32 `json:"index"`
	UUID  string `json:"uuid"`
	Addr  string `json:"addr"`
	// Socket is a Unix socket serving the same data path, for clients on
	// the OST's own machine, which Host names (its boot id, see HostID).
	Socket string `json:"socket,omitempty"`
	Host   string `json:"host,omitempty"`
}

// HostID names this machine for the life of its kernel (the boot id), so
// that a client can tell an OST on its own machine; "" if unknown.
var HostID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// OSTKey is where a live OST registers itself (leased: gone when it dies).
func OSTKey(fsname string, index uint32) string {
	return fmt.Sprintf("%sosts/%04d", EtcdPrefix(fsname), index)
}

// OSTIndexKey permanently binds an OST index to the OST's UUID.
func OSTIndexKey(fsname string, index uint32) string {
	return fmt.Sprintf("%sostidx/%04d", EtcdPrefix(fsname), index)
}

// MetaLeaderPrefix is the election prefix of metadata servers.
func MetaLeaderPrefix(fsname string) string { return EtcdPrefix(fsname) + "meta/leader" }

// OSTRegistry follows the set of live OSTs in etcd.
type OSTRegistry struct {
	cli    *clientv3.Client
	fsname string
	log    *slog.Logger

	mu      sync.RWMutex
	osts    map[uint32]OSTInfo
	sorted  []OSTInfo      // osts ordered by index, for List
	waiters []listedWaiter // guarded by mu
	ready   chan struct{}
	once    sync.Once
}

// listedWaiter is a Listed call not yet satisfied.
type listedWaiter struct {
	n    int
	done chan struct{}
}

// NewOSTRegistry returns a registry; call Run to fill and follow it.
func NewOSTRegistry(cli *clientv3.Client, fsname string, log *slog.Logger) *OSTRegistry {
	return &OSTRegistry{cli: cli, fsname: fsname, log: log, osts: map[uint32]OSTInfo{}, ready: make(chan struct{})}
}

// Ready is closed once the first full listing has been loaded.
func (r *OSTRegistry) Ready() <-chan struct{} { return r.ready }

// Listed returns a channel closed once the registry lists at least n OSTs.
func (r *OSTRegistry) Listed(n int) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := listedWaiter{n: n, done: make(chan struct{})}
	r.waiters = append(r.waiters, w)
	r.wakeLocked()
	return w.done
}

// changedLocked follows a change of osts.
func (r *OSTRegistry) changedLocked() {
	r.sorted = r.sorted[:0]
	for _, info := range r.osts {
		r.sorted = append(r.sorted, info)
	}
	slices.SortFunc(r.sorted, func(a, b OSTInfo) int { return cmp.Compare(a.Index, b.Index) })
	r.wakeLocked()
}

// wakeLocked closes the channels of the Listed calls now satisfied.
func (r *OSTRegistry) wakeLocked() {
	waiting := r.waiters[:0]
	for _, w := range r.waiters {
		if len(r.osts) >= w.n {
			close(w.done)
		} else {
			waiting = append(waiting, w)
		}
	}
	clear(r.waiters[len(waiting):])
	r.waiters = waiting
}

// Run lists the OSTs then watches for changes until ctx ends.
func (r *OSTRegistry) Run(ctx context.Context) error {
	prefix := EtcdPrefix(r.fsname) + "osts/"
	for ctx.Err() == nil {
		resp, err := r.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			r.log.Warn("listing OSTs", "err", err)
			continue
		}
		fresh := map[uint32]OSTInfo{}
		for _, kv := range resp.Kvs {
			if info, ok := r.decode(kv.Value); ok {
				fresh[info.Index] = info
			}
		}
		r.mu.Lock()
		r.osts = fresh
		r.changedLocked()
		r.mu.Unlock()
		r.once.Do(func() { close(r.ready) })
		wch := r.cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		for wr := range wch {
			if wr.Err() != nil {
				r.log.Warn("watching OSTs", "err", wr.Err())
				break
			}
			r.mu.Lock()
			for _, ev := range wr.Events {
				idx, err := strconv.ParseUint(strings.TrimPrefix(string(ev.Kv.Key), prefix), 10, 32)
				if err != nil {
					continue
				}
				if ev.Type == clientv3.EventTypeDelete {
					delete(r.osts, uint32(idx))
					r.log.Info("OST left", "index", idx)
				} else if info, ok := r.decode(ev.Kv.Value); ok {
					r.osts[info.Index] = info
					r.log.Info("OST joined", "index", info.Index, "addr", info.Addr)
				}
			}
			r.changedLocked()
			r.mu.Unlock()
		}
	}
	return nil
}

func (r *OSTRegistry) decode(v []byte) (OSTInfo, bool) {
	var info OSTInfo
	if err := json.Unmarshal(v, &info); err != nil {
		r.log.Warn("bad OST registration", "err", err)
		return info, false
	}
	return info, true
}

// Lookup returns a live OST by index.
func (r *OSTRegistry) Lookup(index uint32) (OSTInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	info, ok := r.osts[index]
	return info, ok
}

// LocalSocket returns the Unix socket of the live OST at addr when that OST
// runs on this machine.
func (r *OSTRegistry) LocalSocket(addr string) (string, bool) {
	host := HostID()
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, info := range r.osts {
		if info.Addr == addr && info.Socket != "" && host != "" && info.Host == host {
			return info.Socket, true
		}
	}
	return "", false
}

// List returns the live OSTs ordered by index.
func (r *OSTRegistry) List() []OSTInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Clone(r.sorted) // every create asks: kept sorted
}
