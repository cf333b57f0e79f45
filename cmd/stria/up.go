package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stria/stria/api"
	"github.com/stria/stria/cmd/stria/cluster"
	"github.com/stria/stria/gateway"
	"github.com/stria/stria/services/lockd"
	"github.com/stria/stria/services/meta"
	"github.com/stria/stria/services/ost"
)

// ReadyLine is printed on stdout once `stria up` has mounted the file system.
const ReadyLine = "stria: ready"

// runUp starts the whole file system in this process: embedded NATS with
// JetStream, embedded etcd, lockd, meta, N OSTs and the mount.
func runUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	var (
		dataDir  = fs.String("data", "", "state directory (required)")
		mnt      = fs.String("mount", "", "mount point (required)")
		osts     = fs.Int("osts", 4, "number of OSTs")
		natsPort = fs.Int("nats-port", 0, "NATS client port on 127.0.0.1 (0: any free port)")
		logLevel = fs.String("log-level", "warn", "debug, info, warn or error")
		pprof    = fs.String("pprof", "", "serve Go profiles (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060")
		lease    = fs.Duration("lock-lease", lockd.DefaultLease, "lock client lease: a dead mount's locks are released after it")
	)
	gwCfg := gateway.NewConfig()
	addGatewayFlags(fs, &gwCfg)
	fsname := &gwCfg.FSName
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *dataDir == "" || *mnt == "":
		return errors.New("--data and --mount are required")
	case *osts < 1 || *osts > 256:
		return fmt.Errorf("--osts %d: must be 1..256", *osts)
	case fs.NArg() != 0:
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if err := api.ValidFSName(*fsname); err != nil {
		return err
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		return err
	}
	if err := servePprof(ctx, *pprof, log); err != nil {
		return err
	}
	if err := checkMountpoint(*mnt, log); err != nil {
		return err
	}
	unlock, err := lockDir(*dataDir)
	if err != nil {
		return err
	}
	defer unlock()

	nsrv, err := cluster.StartNATS(filepath.Join(*dataDir, "nats"), *natsPort)
	if err != nil {
		return err
	}
	defer nsrv.Stop()
	// etcd holds only leases and registrations that every service writes
	// again at start, so the embedded one starts empty each time.
	etcdDir := filepath.Join(*dataDir, "run", "etcd")
	if err := os.RemoveAll(etcdDir); err != nil {
		return err
	}
	esrv, err := cluster.StartEtcd(etcdDir)
	if err != nil {
		return err
	}
	defer esrv.Stop()

	cli, err := cluster.ConnectEtcd(ctx, []string{esrv.URL})
	if err != nil {
		return err
	}
	defer cli.Close()
	// Each service has its own connection, as it would on its own machine:
	// a request and its delivery to the service then go through two
	// connections' read loops, not queue behind each other in one (8 %
	// more creates per second here).
	conns := map[string]*nats.Conn{}
	for _, name := range []string{"lockd", "meta", "gateway"} {
		nc, err := cluster.ConnectNATS(nsrv.URL, "stria-up-"+name, log, nsrv.InProcess())
		if err != nil {
			return err
		}
		defer nc.Close()
		conns[name] = nc
	}

	// Services run until stopServices; the mount stops first on the way out.
	svcCtx, stopServices := context.WithCancel(context.Background())
	defer stopServices()
	var wg sync.WaitGroup
	defer wg.Wait()
	errc := make(chan error, *osts+3)
	run := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(svcCtx); err != nil && svcCtx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}

	lcfg := lockd.DefaultConfig()
	lcfg.FSName = *fsname
	lcfg.Lease = *lease
	lcfg.CallbackTimeout = min(lcfg.CallbackTimeout, *lease/2)
	lcfg.FreshNATS = true // the embedded NATS starts with it
	lsrv, err := lockd.New(lcfg, lockd.Deps{NATS: conns["lockd"], Logger: log})
	if err != nil {
		return err
	}
	run("lockd", lsrv.Run)

	mcfg := meta.DefaultConfig()
	mcfg.DataDir = filepath.Join(*dataDir, "meta")
	mcfg.FSName = *fsname
	// The services in this process call each other's OSTs directly.
	localOSTs := &api.LocalOSTs{}
	msrv, err := meta.New(mcfg, meta.Deps{NATS: conns["meta"], Etcd: cli, Logger: log, Barriers: lsrv, OSTs: localOSTs})
	if err != nil {
		return err
	}
	run("meta", msrv.Run)
	readies := []<-chan struct{}{lsrv.Ready(), msrv.Ready()}
	var ostSrvs []*ost.Server
	for i := 0; i < *osts; i++ {
		ocfg := ost.NewConfig()
		ocfg.DataDir = filepath.Join(*dataDir, fmt.Sprintf("ost%d", i))
		ocfg.Index = i
		ocfg.FSName = *fsname
		osrv, err := ost.New(ocfg, ost.Deps{Etcd: cli, Logger: log})
		if err != nil {
			return err
		}
		run(fmt.Sprintf("ost%d", i), osrv.Run)
		readies = append(readies, osrv.Ready())
		ostSrvs = append(ostSrvs, osrv)
	}
	if err := waitReady(ctx, errc, 2*time.Minute, readies...); err != nil {
		return err
	}
	// Meta learns of the OSTs through etcd, after they register: the
	// first create must find them all.
	if err := waitReady(ctx, errc, 2*time.Minute, msrv.OSTsListed(*osts)); err != nil {
		return err
	}
	for _, o := range ostSrvs {
		localOSTs.Add(o.Addr(), o)
	}

	gwCfg.Mountpoint = *mnt
	gwCfg.NATSURL = nsrv.URL
	gw, err := gateway.New(gwCfg, gateway.Deps{NATS: conns["gateway"], Etcd: cli, Logger: log, Meta: msrv, OSTs: localOSTs})
	if err != nil {
		return err
	}
	gwCtx, stopMount := context.WithCancel(context.Background())
	defer stopMount()
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Run(gwCtx) }()
	select {
	case <-gw.Ready():
	case err := <-gwDone:
		return fmt.Errorf("mount: %w", err)
	case err := <-errc:
		return err
	case <-ctx.Done():
		stopMount()
		<-gwDone
		return nil
	}
	fmt.Printf("%s\n  mount: %s\n  nats:  %s\n  etcd:  %s\n  osts:  %d\n  data:  %s\n", ReadyLine, *mnt, nsrv.URL, esrv.URL, *osts, *dataDir)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-gwDone:
		gwDone <- runErr
	case runErr = <-errc:
	}
	stopMount()
	if err := <-gwDone; err != nil && runErr == nil {
		runErr = err
	}
	stopServices()
	wg.Wait()
	fmt.Println("stria: stopped")
	return runErr
}

// lockDir takes an exclusive lock on a state directory so two processes
// never share it.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("state directory %s is in use by another stria process", dir)
	}
	return func() { f.Close() }, nil
}

// deadFUSE tells whether err is what a FUSE mount whose server died
// returns: "not connected" once the kernel has torn the connection down;
// a mount served over io_uring dies a moment after its process, and until
// the kernel has torn its rings down a request is "aborted" or "canceled".
func deadFUSE(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ECANCELED)
}

// checkMountpoint makes sure mnt is a directory a mount can go on. A dead
// FUSE mount left by a killed stria ("transport endpoint is not connected")
// is detached first, so a restart after kill -9 just works.
func checkMountpoint(mnt string, log *slog.Logger) error {
	// statfs always reaches the file system (stat may be answered from
	// the kernel's attribute cache).
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(mnt, &sfs); deadFUSE(err) {
		log.Warn("detaching the dead mount of an earlier stria", "mount", mnt)
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("mount point %s holds a dead mount that cannot be detached: %w", mnt, err)
		}
	}
	st, err := os.Stat(mnt)
	if err != nil || !st.IsDir() {
		return fmt.Errorf("mount point %s is not a directory", mnt)
	}
	return nil
}
