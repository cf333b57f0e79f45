package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stria/stria/cmd/stria/cluster"
	"github.com/stria/stria/gateway"
	"github.com/stria/stria/services/lockd"
	"github.com/stria/stria/services/meta"
	"github.com/stria/stria/services/ost"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// remote holds the flags every service shares: where NATS and etcd are.
type remote struct {
	nats     string
	etcd     string
	logLevel string
}

func (r *remote) addFlags(fs *flag.FlagSet, withNATS bool) {
	if withNATS {
		fs.StringVar(&r.nats, "nats", nats.DefaultURL, "NATS server URL")
	}
	fs.StringVar(&r.etcd, "etcd", "http://127.0.0.1:2379", "etcd endpoints, comma-separated")
	fs.StringVar(&r.logLevel, "log-level", "info", "debug, info, warn or error")
}

// connect opens the shared connections; the returned func closes them.
func (r *remote) connect(ctx context.Context, name string, withNATS bool) (*slog.Logger, *nats.Conn, *clientv3.Client, func(), error) {
	log, err := newLogger(r.logLevel)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	cli, err := cluster.ConnectEtcd(ctx, strings.Split(r.etcd, ","))
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var nc *nats.Conn
	if withNATS {
		if nc, err = cluster.ConnectNATS(r.nats, name, log); err != nil {
			cli.Close()
			return nil, nil, nil, nil, fmt.Errorf("nats at %s: %w", r.nats, err)
		}
	}
	closeAll := func() {
		if nc != nil {
			nc.Drain()
		}
		cli.Close()
	}
	return log, nc, cli, closeAll, nil
}

func runMeta(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("meta", flag.ContinueOnError)
	cfg := meta.DefaultConfig()
	cfg.AddFlags(fs)
	var r remote
	r.addFlags(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, nc, cli, closeAll, err := r.connect(ctx, "stria-meta", true)
	if err != nil {
		return err
	}
	defer closeAll()
	srv, err := meta.New(cfg, meta.Deps{NATS: nc, Etcd: cli, Logger: log})
	if err != nil {
		return err
	}
	go announce(ctx, srv.Ready(), log, "meta ready")
	return srv.Run(ctx)
}

func runLockd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("lockd", flag.ContinueOnError)
	cfg := lockd.DefaultConfig()
	cfg.AddFlags(fs)
	var r remote
	r.addFlags(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, nc, _, closeAll, err := r.connect(ctx, "stria-lockd", true)
	if err != nil {
		return err
	}
	defer closeAll()
	srv, err := lockd.New(cfg, lockd.Deps{NATS: nc, Logger: log})
	if err != nil {
		return err
	}
	go announce(ctx, srv.Ready(), log, "lockd ready")
	return srv.Run(ctx)
}

func runOST(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ost", flag.ContinueOnError)
	cfg := ost.NewConfig()
	cfg.AddFlags(fs)
	var r remote
	r.addFlags(fs, false)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, _, cli, closeAll, err := r.connect(ctx, "stria-ost", false)
	if err != nil {
		return err
	}
	defer closeAll()
	srv, err := ost.New(cfg, ost.Deps{Etcd: cli, Logger: log})
	if err != nil {
		return err
	}
	go announce(ctx, srv.Ready(), log, "ost ready", "index", func() any { return srv.Index() }, "addr", func() any { return srv.Addr() })
	return srv.Run(ctx)
}

func runMount(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mount", flag.ContinueOnError)
	cfg := gateway.NewConfig()
	addGatewayFlags(fs, &cfg)
	var r remote
	r.addFlags(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: stria mount [flags] MOUNTPOINT")
	}
	cfg.Mountpoint = fs.Arg(0)
	cfg.NATSURL = r.nats
	log, nc, cli, closeAll, err := r.connect(ctx, "stria-mount", true)
	if err != nil {
		return err
	}
	defer closeAll()
	if err := checkMountpoint(cfg.Mountpoint, log); err != nil {
		return err
	}
	gw, err := gateway.New(cfg, gateway.Deps{NATS: nc, Etcd: cli, Logger: log})
	if err != nil {
		return err
	}
	go announce(ctx, gw.Ready(), log, "mounted", "mount", cfg.Mountpoint)
	return gw.Run(ctx)
}

func addGatewayFlags(fs *flag.FlagSet, cfg *gateway.Config) {
	fs.StringVar(&cfg.FSName, "fsname", cfg.FSName, "file system name")
	fs.DurationVar(&cfg.EntryTimeout, "entry-timeout", cfg.EntryTimeout, "how long the kernel caches names no lock covers (not coherent between mounts when above 0)")
	fs.DurationVar(&cfg.AttrTimeout, "attr-timeout", cfg.AttrTimeout, "how long the kernel caches attributes no lock covers (not coherent between mounts when above 0)")
	fs.DurationVar(&cfg.LockedTimeout, "locked-timeout", cfg.LockedTimeout, "how long the kernel caches names and attributes a lock covers (recalled with it; bounded by the lease; 0: the two timeouts above only)")
	fs.DurationVar(&cfg.OSTTimeout, "ost-timeout", cfg.OSTTimeout, "bound on one OST request (then EIO)")
	fs.DurationVar(&cfg.MetaTimeout, "meta-timeout", cfg.MetaTimeout, "bound on one metadata request (then EIO)")
	fs.IntVar(&cfg.ReadAheadKB, "read-ahead-kb", cfg.ReadAheadKB, "kernel read-ahead window for the mount, KiB (0: leave the kernel's)")
	fs.BoolVar(&cfg.FUSERing, "fuse-io-uring", cfg.FUSERing, "serve the mount over io_uring where the kernel has it (Linux 6.14+) and the mount runs as root: fewer thread wake-ups per request")
	fs.BoolVar(&cfg.Debug, "fuse-debug", cfg.Debug, "log every FUSE request")
}

// announce logs msg once ready closes; extra values may be funcs evaluated
// then.
func announce(ctx context.Context, ready <-chan struct{}, log *slog.Logger, msg string, kv ...any) {
	select {
	case <-ready:
	case <-ctx.Done():
		return
	}
	for i, v := range kv {
		if f, ok := v.(func() any); ok {
			kv[i] = f()
		}
	}
	log.Info(msg, kv...)
}

// waitReady waits for every ready channel, failing early if a service's
// Run returned (its error arrives on errc) or the bound passes.
func waitReady(ctx context.Context, errc <-chan error, bound time.Duration, readies ...<-chan struct{}) error {
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for _, r := range readies {
		select {
		case <-r:
		case err := <-errc:
			return fmt.Errorf("a service stopped while starting: %w", err)
		case <-timer.C:
			return fmt.Errorf("services not ready within %v", bound)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
