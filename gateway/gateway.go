// Package gateway is Stria's client: a FUSE mount (go-fuse) that resolves
// names through the metadata service and stripes file data over the OSTs.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/nats-io/nats.go"
	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"
)

// maxWriteBehind is how many bytes of acknowledged writes may be on their
// way to the OSTs at once; a writer past it waits (back-pressure, never a
// dropped write).
const maxWriteBehind = 64 << 20

// Config is the mount's configuration; JSON tags equal the flag names.
type Config struct {
	Mountpoint string `json:"mount"`
	FSName     string `json:"fsname"`
	// EntryTimeout and AttrTimeout are how long the kernel may cache
	// names and attributes that no lock this mount holds covers. Nothing
	// tells the kernel when another mount changes those, so anything but
	// 0 (the default) gives up coherence between mounts for that long.
	EntryTimeout time.Duration `json:"entry-timeout"`
	AttrTimeout  time.Duration `json:"attr-timeout"`
	// LockedTimeout is how long the kernel may cache names and attributes
	// that a lock this mount holds covers (also bounded by the lock
	// lease): the lock's recall makes the kernel drop them. 0: the kernel
	// caches them for the two timeouts above only.
	LockedTimeout time.Duration `json:"locked-timeout"`
	// OSTTimeout bounds one data request: an OST that stops answering
	// gives EIO after it, never a hung mount.
	OSTTimeout time.Duration `json:"ost-timeout"`
	// MetaTimeout bounds one metadata request.
	MetaTimeout time.Duration `json:"meta-timeout"`
	// StartTimeout bounds the wait for meta and the OST list at mount time.
	StartTimeout time.Duration `json:"start-timeout"`
	// NATSURL is shown to admin tools through the stria.nats xattr.
	NATSURL string `json:"nats"`
	// ReadAheadKB is the kernel's read-ahead window for the mount.
	ReadAheadKB int `json:"read-ahead-kb"`
	// FUSERing serves the mount over io_uring where the kernel has it and
	// the mount runs as root (fusering.go), else over /dev/fuse alone.
	FUSERing bool `json:"fuse-io-uring"`
	Debug    bool `json:"debug"`
}

// NewConfig returns the defaults.
func NewConfig() Config {
	return Config{
		FSName:        "stria",
		LockedTimeout: time.Minute,
		OSTTimeout:    30 * time.Second,
		MetaTimeout:   30 * time.Second,
		StartTimeout:  60 * time.Second,
		ReadAheadKB:   8 << 10,
		FUSERing:      true,
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.Mountpoint == "" {
		return errors.New("gateway: mount point is required")
	}
	if err := api.ValidFSName(c.FSName); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if c.OSTTimeout <= 0 || c.MetaTimeout <= 0 || c.StartTimeout <= 0 {
		return errors.New("gateway: timeouts must be positive")
	}
	if c.EntryTimeout < 0 || c.AttrTimeout < 0 || c.LockedTimeout < 0 {
		return errors.New("gateway: cache timeouts must not be negative")
	}
	return nil
}

// Deps are the connections the gateway uses.
type Deps struct {
	NATS   *nats.Conn
	Etcd   *clientv3.Client
	Logger *slog.Logger
	// Meta, if set, is the file system's metadata service running in this
	// process (`stria up`): metadata calls go to it directly, not through
	// NATS. Locks and everything else still go through NATS.
	Meta api.MetaHandler
	// OSTs, if set, are the file system's OSTs running in this process:
	// the mount calls them directly, not through sockets.
	OSTs *api.LocalOSTs
}

// Gateway is one mount of a Stria file system.
type Gateway struct {
	cfg  Config
	log  *slog.Logger
	meta *api.MetaClient
	ost  *api.OSTClient
	osts *api.OSTRegistry
	// locks is this mount's lock client; ns caches names and attributes
	// under its locks (nscache.go).
	locks *api.LockSession
	ns    *nsCache
	// server is the mounted FUSE server, for the kernel invalidations of
	// the namespace cache (nil until mounted).
	server atomic.Pointer[fuse.Server]

	ready chan struct{}

	// writeSlots bounds the bytes of write-behind in flight.
	writeSlots *semaphore.Weighted
	// aheadBytes bounds the bytes strided read-ahead holds (readahead.go).
	aheadBytes *semaphore.Weighted

	// written holds the nodes with writes whose size and mtime meta has not
	// been told yet, so a lookup of the same inode does not shrink the
	// kernel's idea of the size.
	writtenMu sync.Mutex
	written   map[uint64]*node
}

// New checks the configuration and builds a gateway; Run mounts it.
func New(cfg Config, deps Deps) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NATS == nil || deps.Etcd == nil {
		return nil, errors.New("gateway: NATS and etcd connections are required")
	}
	lg := deps.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	lg = lg.With("component", "gateway", "mount", cfg.Mountpoint)
	osts := api.NewOSTRegistry(deps.Etcd, cfg.FSName, lg)
	ost := api.NewOSTClient(cfg.OSTTimeout)
	ost.Sockets = osts
	ost.Local = deps.OSTs
	g := &Gateway{
		cfg:        cfg,
		log:        lg,
		meta:       api.NewMetaClient(deps.NATS, cfg.FSName, cfg.MetaTimeout),
		ost:        ost,
		osts:       osts,
		locks:      api.NewLockSession(deps.NATS, cfg.FSName, cfg.MetaTimeout, lg),
		ready:      make(chan struct{}),
		writeSlots: semaphore.NewWeighted(maxWriteBehind),
		aheadBytes: semaphore.NewWeighted(raTotalBytes),
		written:    map[uint64]*node{},
	}
	g.meta.Local = deps.Meta
	g.ns = newNSCache(g.locks, cfg.LockedTimeout, lg)
	g.ns.invalidate = g.invalidateKernel
	g.ns.list = func(ctx context.Context, dir uint64, limit int) (api.ReadDirResp, error) {
		var r api.ReadDirResp
		err := g.metaCall(ctx, api.OpReadDir, api.ReadDirReq{Ino: dir, Limit: limit}, &r)
		return r, err
	}
	g.locks.OnID = g.meta.SetLockClient
	g.locks.OnRevoke = g.ns.revoke
	g.locks.OnLost = g.ns.lost
	return g, nil
}

// dropPages has the kernel drop its cached pages of ino's bytes [off,
// off+n).
func (g *Gateway) dropPages(ino uint64, off, n int64) {
	if srv := g.server.Load(); srv != nil {
		srv.InodeNotify(ino, off, n)
	}
}

// invalidateKernel has the kernel drop names and attributes that dropped
// locks covered. The kernel's node ids are the inode numbers (ExternalNodeID);
// a name or inode the kernel no longer holds is nothing to drop (ENOENT).
func (g *Gateway) invalidateKernel(drops []dropped) {
	srv := g.server.Load()
	if srv == nil {
		return
	}
	for _, d := range drops {
		for _, name := range d.names {
			srv.EntryNotify(d.dir, name)
		}
		for _, ino := range d.inos {
			srv.InodeNotify(ino, -1, 0) // attributes only
		}
	}
}

// Ready is closed once the file system is mounted and usable.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// Run mounts the file system, serves it until ctx ends, then unmounts.
func (g *Gateway) Run(ctx context.Context) error {
	defer g.ost.Close()
	regCtx, stopReg := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); g.osts.Run(regCtx) }()
	wg.Go(func() { g.locks.Run(regCtx) })
	defer wg.Wait()
	defer stopReg()

	root, err := g.waitForMeta(ctx)
	if err != nil {
		return err
	}
	select {
	case <-g.osts.Ready():
	case <-ctx.Done():
		return ctx.Err()
	}

	server, ring, err := g.mount(root)
	if err != nil {
		return err
	}
	g.server.Store(server)
	g.setReadAhead()
	g.log.Info("mounted")
	close(g.ready)

	served := make(chan struct{})
	go func() { server.Wait(); close(served) }()
	select {
	case <-ctx.Done():
	case <-served:
		return errors.New("gateway: file system was unmounted from outside")
	}
	unmount := server.Unmount
	if ring != nil {
		// go-fuse knows the mount only as /dev/fd/N.
		unmount = func() error { return syscall.Unmount(g.cfg.Mountpoint, 0) }
	}
	// A busy mount (a shell sitting in it) cannot be unmounted normally;
	// detach it so the process can still stop.
	if err := unmount(); err != nil {
		g.log.Warn("unmount failed, detaching", "err", err)
		if derr := syscall.Unmount(g.cfg.Mountpoint, syscall.MNT_DETACH); derr != nil {
			return fmt.Errorf("gateway: unmounting %s: %w", g.cfg.Mountpoint, errors.Join(err, derr))
		}
	}
	<-served
	if ring != nil {
		ring.wait()
	}
	g.log.Info("unmounted")
	return nil
}

// mount mounts the file system: over io_uring if configured and possible,
// else over /dev/fuse alone.
func (g *Gateway) mount(root *node) (*fuse.Server, *fuseRing, error) {
	if g.cfg.FUSERing {
		if why := fuseRingUnavailable(g.log); why != nil {
			g.log.Info("FUSE over io_uring not used", "why", why)
		} else {
			server, ring, err := mountFUSERing(g.cfg.Mountpoint, root, g.fuseOptions(), g.cfg.StartTimeout, g.log)
			if err != nil {
				return nil, nil, fmt.Errorf("gateway: mounting %s: %w (--fuse-io-uring=false mounts without it)", g.cfg.Mountpoint, err)
			}
			return server, ring, nil
		}
	}
	server, err := fs.Mount(g.cfg.Mountpoint, root, g.fuseOptions())
	if err != nil {
		return nil, nil, fmt.Errorf("gateway: mounting %s: %w", g.cfg.Mountpoint, err)
	}
	return server, nil, nil
}

// setReadAhead raises the kernel's read-ahead window for this mount.
func (g *Gateway) setReadAhead() {
	if g.cfg.ReadAheadKB <= 0 {
		return
	}
	if err := SetReadAhead(g.cfg.Mountpoint, g.cfg.ReadAheadKB); err != nil {
		g.log.Warn("read-ahead: cannot raise the kernel's window (not root?)", "err", err)
	}
}

// SetReadAhead sets the kernel's read-ahead window of the FUSE mount at
// mountpoint. FUSE mounts start at 128 KiB, which cuts sequential reads
// into 128 KiB requests one after another; a larger window lets the kernel
// send 1 MiB requests several at a time, spread over the stripes. Exported
// so reference mounts in benchmarks get the same window.
func SetReadAhead(mountpoint string, kb int) error {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return err
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(path, []byte(strconv.Itoa(kb)), 0)
}

// waitForMeta polls the root inode until meta answers, so a mount never
// comes up in front of a metadata service that is not there.
func (g *Gateway) waitForMeta(ctx context.Context) (*node, error) {
	deadline := time.Now().Add(g.cfg.StartTimeout)
	for {
		var r api.AttrResp
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := g.meta.Call(cctx, api.OpGetAttr, api.InoReq{Ino: api.RootIno}, &r)
		cancel()
		if err == nil {
			return g.newNode(r.Attr, nil), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("gateway: metadata service not reachable: %w", err)
		}
		g.log.Debug("waiting for meta", "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (g *Gateway) fuseOptions() *fs.Options {
	entry, attr := g.cfg.EntryTimeout, g.cfg.AttrTimeout
	var negative time.Duration
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:      "stria:" + g.cfg.FSName,
			Name:        "stria",
			AllowOther:  true,
			DirectMount: os.Geteuid() == 0,
			// The kernel checks permissions against the mode bits we
			// report; meta stores what the caller asked for.
			Options:       []string{"default_permissions"},
			MaxWrite:      maxWrite,
			MaxReadAhead:  1 << 20,
			DisableSplice: true, // splice fails at 1 MiB (FACTS.md)
			MaxBackground: 64,
			Debug:         g.cfg.Debug,
			// We clear set-ID bits where writes, truncates and chowns
			// should (Setattr, killSetID); in return the kernel stops
			// asking for security.capability before every write(2).
			ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2,
		},
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &negative,
		RootStableAttr:  &fs.StableAttr{Ino: api.RootIno},
		// Node ids are inode numbers (meta never reuses one), so the
		// namespace cache can name to the kernel what it must drop.
		ExternalNodeID: true,
		Logger:         log.New(slogWriter{g.log}, "", 0),
	}
	if !g.cfg.Debug {
		opts.MountOptions.Logger = log.New(slogWriter{g.log}, "", 0)
	}
	return opts
}

// slogWriter adapts go-fuse's *log.Logger output to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Info("fuse", "msg", string(p))
	return len(p), nil
}

func (g *Gateway) trackWritten(n *node) {
	g.writtenMu.Lock()
	g.written[n.ino()] = n
	g.writtenMu.Unlock()
}

func (g *Gateway) untrackWritten(n *node) {
	g.writtenMu.Lock()
	if g.written[n.ino()] == n {
		delete(g.written, n.ino())
	}
	g.writtenMu.Unlock()
}

// localSize returns the size this mount has written beyond what meta knows.
func (g *Gateway) localSize(ino uint64) (uint64, bool) {
	g.writtenMu.Lock()
	n := g.written[ino]
	g.writtenMu.Unlock()
	if n == nil {
		return 0, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.attr.Size, n.dirty
}

// ostAddr resolves a stripe's OST.
func (g *Gateway) ostAddr(index uint32) (string, error) {
	info, ok := g.osts.Lookup(index)
	if !ok {
		return "", api.Errorf(api.CodeUnavailable, "OST %d is not registered (down?)", index)
	}
	return info.Addr, nil
}

// metaCall calls meta, deliberately ignoring FUSE interrupts: a mutation
// abandoned half-way would leave the caller told EINTR about a change that
// happened, and Go programs are interrupted by every preemption signal.
// MetaTimeout bounds the wait; a fatal signal still ends the caller.
func (g *Gateway) metaCall(ctx context.Context, op string, req, resp any) error {
	return g.meta.Call(context.WithoutCancel(ctx), op, req, resp)
}
