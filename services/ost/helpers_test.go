package ost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// startEtcd runs a single-member etcd in-process under a temporary
// directory and returns a client for it.
func startEtcd(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = tb.TempDir()
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	curl, _ := url.Parse("http://127.0.0.1:0")
	purl, _ := url.Parse("http://" + freeAddr(tb))
	cfg.ListenClientUrls = []url.URL{*curl}
	cfg.AdvertiseClientUrls = []url.URL{*curl}
	cfg.ListenPeerUrls = []url.URL{*purl}
	cfg.AdvertisePeerUrls = []url.URL{*purl}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		tb.Fatalf("start etcd: %v", err)
	}
	tb.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		tb.Fatalf("etcd failed: %v", err)
	case <-time.After(20 * time.Second):
		tb.Fatal("etcd not ready within 20s")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{e.Clients[0].Addr().String()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// freeAddr returns a loopback address with a port free at the time of
// the call.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testOST is a running OST.
type testOST struct {
	*Server
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// tbWriter sends log lines to the test log.
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(tb testing.TB, extra io.Writer) *slog.Logger {
	var w io.Writer = tbWriter{tb}
	if extra != nil {
		w = io.MultiWriter(w, extra)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startOST starts an OST and waits until it is ready.
func startOST(tb testing.TB, cli *clientv3.Client, cfg Config, log *slog.Logger) *testOST {
	tb.Helper()
	o, err := tryStartOST(tb, cli, cfg, log)
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

func tryStartOST(tb testing.TB, cli *clientv3.Client, cfg Config, log *slog.Logger) (*testOST, error) {
	tb.Helper()
	if log == nil {
		log = testLogger(tb, nil)
	}
	srv, err := New(cfg, Deps{Etcd: cli, Logger: log})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	o := &testOST{Server: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { o.done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		if err := o.stop(); err != nil {
			tb.Errorf("OST Run: %v", err)
		}
	})
	select {
	case <-srv.Ready():
		return o, nil
	case err := <-o.done:
		o.once.Do(func() {}) // Run has returned: nothing to stop

		if err == nil {
			err = errors.New("Run returned before ready")
		}
		return nil, err
	case <-time.After(20 * time.Second):
		return nil, errors.New("OST not ready within 20s")
	}
}

// stop cancels Run and waits for it to return.
func (o *testOST) stop() error {
	o.once.Do(func() {
		o.cancel()
		select {
		case o.err = <-o.done:
		case <-time.After(20 * time.Second):
			o.err = errors.New("Run did not return within 20s of cancel")
		}
	})
	return o.err
}

// testConfig is a config for an OST with its own data directory.
func testConfig(tb testing.TB, fsname string) Config {
	cfg := NewConfig()
	cfg.DataDir = tb.TempDir()
	cfg.FSName = fsname
	cfg.LeaseTTL = 2 * time.Second
	return cfg
}

func newClient(tb testing.TB) *api.OSTClient {
	c := api.NewOSTClient(20 * time.Second)
	tb.Cleanup(c.Close)
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not true within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pattern returns n deterministic non-zero bytes derived from seed.
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x) | 1
	}
	return b
}

func codeOf(err error) api.Code { return api.CodeOf(err) }

func hexObj(obj uint64) string { return fmt.Sprintf("%016x", obj) }

// inlineSlots returns the checksum attribute of the data file at path.
func inlineSlots(t *testing.T, path string) []byte {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(path, inlineAttr, buf)
	if err != nil {
		t.Fatalf("checksum attribute of %s: %v", path, err)
	}
	return buf[:n]
}

// flipSlotBit flips a bit in byte at of block's checksum slot of the
// object whose data file is path, wherever the slot lives.
func flipSlotBit(t *testing.T, path string, block, at int64) {
	t.Helper()
	if _, err := unix.Getxattr(path, inlineAttr, nil); err != nil {
		flipBit(t, path+".crc", slotOffset(block)+at)
		return
	}
	v := inlineSlots(t, path)
	v[block*slotSize+at] ^= 0x10
	if err := unix.Setxattr(path, inlineAttr, v, 0); err != nil {
		t.Fatal(err)
	}
}
