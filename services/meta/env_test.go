package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// One NATS server (with JetStream) and one etcd serve the whole test binary;
// every test uses its own file system name, so subjects, etcd keys and
// streams never collide.
var env struct {
	nc   *nats.Conn
	etcd *clientv3.Client
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "stria-meta-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir + "/nats", NoLog: true, NoSigs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats:", err)
		return 1
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats did not start")
		return 1
	}
	env.nc, err = nats.Connect(ns.ClientURL())
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats connect:", err)
		return 1
	}
	defer env.nc.Close()

	e, err := startEtcd(dir + "/etcd")
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		return 1
	}
	defer e.Close()
	env.etcd, err = clientv3.New(clientv3.Config{
		Endpoints:   []string{e.Clients[0].Addr().String()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd client:", err)
		return 1
	}
	defer env.etcd.Close()
	sub, err := env.nc.Subscribe("stria.*.lockd.*", fakeLockd)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake lockd:", err)
		return 1
	}
	defer sub.Unsubscribe()
	return m.Run()
}

// fakeLockd stands in for the lock service (a separate service meta may not
// import): it grants every ping and change barrier at once and records the
// barriers per file system, so tests can check what a change asked for.
// The lock service's own behaviour is tested in services/lockd.
func fakeLockd(m *nats.Msg) {
	parts := strings.Split(m.Subject, ".")
	fsname, op := parts[1], parts[3]
	var resp any = struct{}{}
	switch op {
	case api.LockOpPing:
		resp = api.LockPingResp{Instance: "fake", LeaseNS: int64(time.Minute)}
	case api.LockOpChange:
		var r api.LockChangeReq
		if err := json.Unmarshal(m.Data, &r); err != nil {
			return
		}
		barriers.Lock()
		barriers.byFS[fsname] = append(barriers.byFS[fsname], r)
		barriers.Unlock()
		resp = api.LockChangeResp{Token: barriers.next.Add(1)}
	}
	data, _ := json.Marshal(resp)
	m.Respond(data)
}

var barriers = struct {
	sync.Mutex
	byFS map[string][]api.LockChangeReq
	next atomic.Uint64
}{byFS: map[string][]api.LockChangeReq{}}

// takeBarriers returns and forgets the change barriers fsname's meta took.
func takeBarriers(fsname string) []api.LockChangeReq {
	barriers.Lock()
	defer barriers.Unlock()
	b := barriers.byFS[fsname]
	delete(barriers.byFS, fsname)
	return b
}

func startEtcd(dir string) (*embed.Etcd, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	peer := "http://" + l.Addr().String()
	l.Close()
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.Name = "test"
	cu, _ := url.Parse("http://127.0.0.1:0")
	pu, _ := url.Parse(peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + peer
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, errors.New("etcd not ready after 30s")
	}
}

var fsCounter atomic.Int64

// uniqueFS is a fresh file system name for one test.
func uniqueFS() string { return fmt.Sprintf("t%d_%d", os.Getpid()%100000, fsCounter.Add(1)) }

func testLogger(tb testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("STRIA_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	var w io.Writer = os.Stderr
	if t, ok := tb.(interface{ Output() io.Writer }); ok {
		w = t.Output()
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeOST speaks the OST frame protocol well enough for meta: it records
// destroys and answers statfs. Only for this package's unit tests.
type fakeOST struct {
	index uint32
	ln    net.Listener
	down  atomic.Bool // answer every request with unavailable

	mu        sync.Mutex
	destroyed map[uint64]int
	conns     map[net.Conn]bool
}

func startFakeOST(tb testing.TB, index uint32) *fakeOST {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	o := &fakeOST{index: index, ln: ln, destroyed: map[uint64]int{}, conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.mu.Lock()
			o.conns[c] = true
			o.mu.Unlock()
			wg.Go(func() { o.serve(c) })
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		o.mu.Lock()
		for c := range o.conns {
			c.Close()
		}
		o.mu.Unlock()
		wg.Wait()
	})
	return o
}

func (o *fakeOST) addr() string { return o.ln.Addr().String() }

func (o *fakeOST) serve(c net.Conn) {
	defer c.Close()
	hdr := make([]byte, api.ReqHeaderSize)
	scratch := make([]byte, 4096)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		h, err := api.DecodeReqHeader(hdr)
		if err != nil {
			api.WriteResponse(c, scratch, 0, nil, err)
			return
		}
		payload := make([]byte, h.PayloadLen)
		if _, err := io.ReadFull(c, payload); err != nil {
			return
		}
		if o.down.Load() {
			api.WriteResponse(c, scratch, 0, nil, api.Errorf(api.CodeUnavailable, "fake OST %d is down", o.index))
			continue
		}
		var (
			reply []byte
			value uint64
		)
		switch h.Op {
		case api.OSTDestroy:
			objs := []uint64{h.Object}
			if len(payload) > 0 {
				objs, _ = api.DecodeObjectList(payload) // DecodeReqHeader checked its length
			}
			o.mu.Lock()
			for _, obj := range objs {
				o.destroyed[obj]++
			}
			o.mu.Unlock()
			value = uint64(len(objs))
		case api.OSTStatFS:
			reply = api.EncodeStatfs(api.OSTStatfs{Index: o.index, Total: 1 << 40, Free: 1 << 39, Avail: 1 << 39, Objects: 7})
		}
		if err := api.WriteResponse(c, scratch, value, reply, nil); err != nil {
			return
		}
	}
}

func (o *fakeOST) destroys(obj uint64) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.destroyed[obj]
}

// harness runs one metadata server for one file system.
type harness struct {
	tb   testing.TB
	fs   string
	dir  string
	cli  *api.MetaClient
	osts []*fakeOST

	srv    *Server
	cancel context.CancelFunc
	done   chan error
}

// newHarness registers nOST fake OSTs and starts a server.
func newHarness(tb testing.TB, nOST int) *harness {
	h := &harness{tb: tb, fs: uniqueFS(), dir: tb.TempDir()}
	h.cli = api.NewMetaClient(env.nc, h.fs, 20*time.Second)
	for i := range nOST {
		h.addOST(uint32(i))
	}
	h.start(nil)
	tb.Cleanup(h.stop)
	return h
}

func (h *harness) addOST(index uint32) *fakeOST {
	o := startFakeOST(h.tb, index)
	h.osts = append(h.osts, o)
	info, _ := json.Marshal(api.OSTInfo{Index: index, UUID: fmt.Sprintf("ost-%d", index), Addr: o.addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := env.etcd.Put(ctx, api.OSTKey(h.fs, index), string(info)); err != nil {
		h.tb.Fatal(err)
	}
	if _, err := env.etcd.Put(ctx, api.OSTIndexKey(h.fs, index), info2uuid(index)); err != nil {
		h.tb.Fatal(err)
	}
	if h.srv != nil {
		waitFor(h.tb, "OST registration", 5*time.Second, func() bool { _, ok := h.srv.reg.Lookup(index); return ok })
	}
	return o
}

func info2uuid(index uint32) string { return fmt.Sprintf("ost-%d", index) }

// removeOST unregisters an OST (as if its lease expired).
func (h *harness) removeOST(index uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := env.etcd.Delete(ctx, api.OSTKey(h.fs, index)); err != nil {
		h.tb.Fatal(err)
	}
	waitFor(h.tb, "OST removal", 5*time.Second, func() bool { _, ok := h.srv.reg.Lookup(index); return !ok })
}

// start runs a server on the harness's directory; hook may adjust it first.
func (h *harness) start(hook func(*Server)) {
	h.tb.Helper()
	srv := h.newServer(h.dir, hook)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-done:
		cancel()
		h.tb.Fatalf("server ended before ready: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		h.tb.Fatal("server not ready after 20s")
	}
	h.srv, h.cancel, h.done = srv, cancel, done
}

func (h *harness) newServer(dir string, hook func(*Server)) *Server {
	srv, err := New(Config{DataDir: dir, FSName: h.fs, LeaseTTL: 2 * time.Second, OSTTimeout: time.Second},
		Deps{NATS: env.nc, Etcd: env.etcd, Logger: testLogger(h.tb)})
	if err != nil {
		h.tb.Fatal(err)
	}
	if hook != nil {
		hook(srv)
	}
	return srv
}

// stop ends the server and waits for Run to return.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.tb.Errorf("Run returned %v", err)
		}
	case <-time.After(20 * time.Second):
		h.tb.Error("Run did not return after 20s")
	}
	h.cancel = nil
}

func (h *harness) restart(hook func(*Server)) {
	h.stop()
	h.start(hook)
}

func (h *harness) call(op string, req, resp any) error {
	return h.cli.Call(context.Background(), op, req, resp)
}

// must calls op and fails the test on error.
func (h *harness) must(op string, req, resp any) {
	h.tb.Helper()
	if err := h.call(op, req, resp); err != nil {
		h.tb.Fatalf("%s %+v: %v", op, req, err)
	}
}

func (h *harness) create(parent uint64, name string, mode uint32) api.EntryResp {
	h.tb.Helper()
	var r api.EntryResp
	h.must(api.OpCreate, api.CreateReq{Parent: parent, Name: name, Mode: mode, Caller: api.Caller{UID: 1000, GID: 1000}}, &r)
	return r
}

func (h *harness) mkdir(parent uint64, name string) uint64 {
	h.tb.Helper()
	return h.create(parent, name, api.ModeDir|0o755).Attr.Ino
}

func (h *harness) mkfile(parent uint64, name string) uint64 {
	h.tb.Helper()
	return h.create(parent, name, api.ModeReg|0o644).Attr.Ino
}

func (h *harness) symlink(parent uint64, name, target string) api.EntryResp {
	h.tb.Helper()
	var r api.EntryResp
	h.must(api.OpCreate, api.CreateReq{Parent: parent, Name: name, Mode: api.ModeLink | 0o777, Target: target, Caller: caller}, &r)
	return r
}

func (h *harness) attr(ino uint64) api.Attr {
	h.tb.Helper()
	var r api.AttrResp
	h.must(api.OpGetAttr, api.InoReq{Ino: ino}, &r)
	return r.Attr
}

func (h *harness) lookup(parent uint64, name string) (api.EntryResp, error) {
	var r api.EntryResp
	err := h.call(api.OpLookup, api.LookupReq{Parent: parent, Name: name}, &r)
	return r, err
}

func codeOf(err error) api.Code { return api.CodeOf(err) }

func longName(n int) string { return strings.Repeat("n", n) }
