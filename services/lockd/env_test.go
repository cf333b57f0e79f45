package lockd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stria/stria/api"
)

// One NATS server serves the whole test binary; every test uses its own file
// system name, so the lock subjects of parallel tests never meet.
var natsURL string

const (
	// testLease and testCallback keep the suite fast; tests derive their
	// timing bounds from them.
	testLease    = 500 * time.Millisecond
	testCallback = 100 * time.Millisecond
	// callTimeout bounds every request a test makes (it never stands in
	// for a wait: a call that takes it has failed).
	callTimeout = 5 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
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
	natsURL = ns.ClientURL()
	return m.Run()
}

var fsCounter atomic.Int64

// uniqueFS is a fresh file system name for one test.
func uniqueFS() string { return fmt.Sprintf("l%d_%d", os.Getpid()%100000, fsCounter.Add(1)) }

func testConfig(fs string) Config {
	return Config{FSName: fs, Lease: testLease, CallbackTimeout: testCallback}
}

func testLogger(tb testing.TB) *slog.Logger {
	level := slog.LevelError
	if os.Getenv("STRIA_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	var w io.Writer = os.Stderr
	if t, ok := tb.(interface{ Output() io.Writer }); ok {
		w = t.Output()
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// connect opens a NATS connection of its own, closed when the test ends.
func connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(natsURL, nats.NoReconnect())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, what string, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// testLockd is one running lock server.
type testLockd struct {
	*Server
	// started is taken just before Run: the grace period ends no earlier
	// than started plus the lease.
	started time.Time
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// startLockd runs a server on a connection of its own and waits until it
// answers; it is stopped when the test ends.
func startLockd(tb testing.TB, cfg Config) *testLockd {
	tb.Helper()
	srv, err := New(cfg, Deps{NATS: connect(tb), Logger: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &testLockd{Server: srv, started: time.Now(), cancel: cancel, done: make(chan error, 1)}
	go func() { l.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
		// Ready closes once the endpoints are subscribed on the server's
		// connection, which may not yet have told NATS (see
		// TestReadyMeansServing): a round trip on it makes sure.
		if err := srv.nc.Flush(); err != nil {
			tb.Fatal(err)
		}
	case err := <-l.done:
		tb.Fatalf("lockd Run returned before it was ready: %v", err)
	case <-time.After(callTimeout):
		tb.Fatal("lockd not ready")
	}
	tb.Cleanup(func() { l.stop(tb) })
	return l
}

// stop ends Run and checks it returns (promptly, and without error).
func (l *testLockd) stop(tb testing.TB) {
	tb.Helper()
	if l.stopped {
		return
	}
	l.stopped = true
	l.cancel()
	select {
	case err := <-l.done:
		if err != nil {
			tb.Errorf("lockd Run: %v", err)
		}
	case <-time.After(callTimeout):
		tb.Errorf("lockd Run did not return %v after its context ended", callTimeout)
	}
}

// pastGrace waits until the server lets changes through. graceEnd is set
// before Ready closes, so reading it after Ready is safe.
func (l *testLockd) pastGrace() { time.Sleep(time.Until(l.graceEnd)) }

// White-box views of the lock table, for conditions no reply shows.

func (l *testLockd) hasClient(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.clients[id] != nil
}

func (l *testLockd) isEvicted(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.clients[id]
	return c != nil && c.evicted
}

func (l *testLockd) barrierCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.barriers)
}

func (l *testLockd) dirCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.dirs)
}

// replyErr turns a micro error reply into an *api.Error (as api's client
// does) or decodes a good reply into resp.
func replyErr(msg *nats.Msg, resp any) error {
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		return &api.Error{Code: api.Code(code), Msg: msg.Header.Get("Nats-Service-Error")}
	}
	if resp == nil {
		return nil
	}
	if err := json.Unmarshal(msg.Data, resp); err != nil {
		return fmt.Errorf("decoding reply %q: %w", msg.Data, err)
	}
	return nil
}

// rawClient speaks the lock protocol by hand: it registers and pings only
// when told, and answers recalls only if it listens.
type rawClient struct {
	tb testing.TB
	nc *nats.Conn
	fs string
	id string
}

var rawCounter atomic.Int64

func newRaw(tb testing.TB, fs string) *rawClient {
	return &rawClient{tb: tb, nc: connect(tb), fs: fs, id: fmt.Sprintf("raw-%d", rawCounter.Add(1))}
}

func (r *rawClient) call(op string, req, resp any) error {
	data, err := json.Marshal(req)
	if err != nil {
		r.tb.Fatal(err)
	}
	msg, err := r.nc.Request(api.LockSubject(r.fs, op), data, callTimeout)
	if err != nil {
		return err
	}
	return replyErr(msg, resp)
}

func (r *rawClient) ping(register bool) (api.LockPingResp, error) {
	var resp api.LockPingResp
	err := r.call(api.LockOpPing, api.LockPingReq{Client: r.id, Register: register}, &resp)
	return resp, err
}

// register registers the client and fails the test if lockd refuses.
func (r *rawClient) register() api.LockPingResp {
	r.tb.Helper()
	resp, err := r.ping(true)
	if err != nil {
		r.tb.Fatalf("registering %s: %v", r.id, err)
	}
	return resp
}

func (r *rawClient) enqueue(dirs ...uint64) error {
	var resp api.LockGrantResp
	return r.call(api.LockOpEnqueue, api.LockEnqueueReq{Client: r.id, Dirs: dirs}, &resp)
}

func (r *rawClient) cancelLocks(dirs ...uint64) error {
	return r.call(api.LockOpCancel, api.LockCancelReq{Client: r.id, Dirs: dirs}, nil)
}

func (r *rawClient) change(forID string, dirs ...uint64) (uint64, error) {
	var resp api.LockChangeResp
	err := r.call(api.LockOpChange, api.LockChangeReq{Client: r.id, For: forID, Dirs: dirs}, &resp)
	return resp.Token, err
}

// done ends a barrier and waits for lockd's answer (LockSession.Done does
// not), so what follows sees the barrier gone.
func (r *rawClient) done(token uint64) error {
	return r.call(api.LockOpDone, api.LockDoneReq{Client: r.id, Token: token}, nil)
}

// listen subscribes to the client's recalls: each arrives on the channel,
// answered first if answer is set.
func (r *rawClient) listen(answer bool) <-chan *nats.Msg {
	r.tb.Helper()
	ch := make(chan *nats.Msg, 16)
	_, err := r.nc.Subscribe(api.LockCallbackSubject(r.fs, r.id), func(m *nats.Msg) {
		if answer {
			m.Respond([]byte("{}"))
		}
		ch <- m
	})
	if err != nil {
		r.tb.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		r.tb.Fatal(err)
	}
	return ch
}

// keepPinging renews r's lease every interval until it is told CodeEvicted
// or the test ends. lastSent is when the last answered ping was sent (lockd
// saw it no earlier), evictedAt when the first CodeEvicted came.
type pinger struct {
	mu        sync.Mutex
	lastSent  time.Time
	evictedAt time.Time
	stop      chan struct{}
	done      chan struct{}
}

func (r *rawClient) keepPinging(interval time.Duration) *pinger {
	p := &pinger{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			sent := time.Now()
			_, err := r.ping(false)
			p.mu.Lock()
			switch {
			case err == nil:
				p.lastSent = sent
			case api.CodeOf(err) == api.CodeEvicted:
				p.evictedAt = time.Now()
			}
			evicted := !p.evictedAt.IsZero()
			p.mu.Unlock()
			if evicted {
				return
			}
			select {
			case <-p.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	r.tb.Cleanup(p.halt)
	return p
}

func (p *pinger) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *pinger) times() (lastSent, evictedAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastSent, p.evictedAt
}

// session is a LockSession whose callbacks are recorded.
type session struct {
	*api.LockSession

	mu        sync.Mutex
	revokes   [][]uint64
	ids       []string
	lostValid []bool // Valid() as seen from inside each OnLost
	// hook, if set, runs inside OnRevoke (after the recall is recorded).
	hook func(dirs []uint64)
}

// openSession makes a session on a connection of its own; run starts it.
func openSession(tb testing.TB, fs string) *session {
	s := &session{}
	ls := api.NewLockSession(connect(tb), fs, callTimeout, testLogger(tb))
	ls.OnRevoke = func(dirs []uint64) {
		s.mu.Lock()
		s.revokes = append(s.revokes, slices.Clone(dirs))
		hook := s.hook
		s.mu.Unlock()
		if hook != nil {
			hook(dirs)
		}
	}
	ls.OnLost = func() {
		valid := ls.Valid()
		s.mu.Lock()
		s.lostValid = append(s.lostValid, valid)
		s.mu.Unlock()
	}
	ls.OnID = func(id string) {
		s.mu.Lock()
		s.ids = append(s.ids, id)
		s.mu.Unlock()
	}
	s.LockSession = ls
	return s
}

// run runs the session until the test ends.
func (s *session) run(tb testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("LockSession.Run: %v", err)
			}
		case <-time.After(callTimeout):
			tb.Errorf("LockSession.Run did not return after its context ended")
		}
	})
}

// startSession runs a session and waits until it is registered.
func startSession(tb testing.TB, fs string) *session {
	tb.Helper()
	s := openSession(tb, fs)
	s.run(tb)
	waitFor(tb, "the session to register", callTimeout, s.Valid)
	return s
}

func (s *session) revoked() [][]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.revokes)
}

func (s *session) seenIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

func (s *session) losses() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lostValid)
}

func (s *session) setHook(h func([]uint64)) {
	s.mu.Lock()
	s.hook = h
	s.mu.Unlock()
}

// mustEnqueue takes shared locks and fails the test unless they are granted.
func (s *session) mustEnqueue(tb testing.TB, dirs ...uint64) {
	tb.Helper()
	granted, err := s.Enqueue(context.Background(), dirs)
	if err != nil || !granted {
		tb.Fatalf("Enqueue(%v) = %v, %v; want granted (id %q, valid %v, ids %v, OnLost calls %d)", dirs, granted, err, s.ID(), s.Valid(), s.seenIDs(), len(s.losses()))
	}
}

// mustChange takes a change barrier and fails the test on an error.
func (s *session) mustChange(tb testing.TB, forID string, dirs ...uint64) uint64 {
	tb.Helper()
	tok, err := s.Change(context.Background(), forID, dirs)
	if err != nil {
		tb.Fatalf("Change(%q, %v): %v", forID, dirs, err)
	}
	return tok
}

// result is what an asynchronous call returned, and when.
type result struct {
	granted bool
	token   uint64
	err     error
	at      time.Time
}

func goEnqueue(s *session, dirs ...uint64) <-chan result {
	ch := make(chan result, 1)
	go func() {
		g, err := s.Enqueue(context.Background(), dirs)
		ch <- result{granted: g, err: err, at: time.Now()}
	}()
	return ch
}

func goChange(s *session, forID string, dirs ...uint64) <-chan result {
	ch := make(chan result, 1)
	go func() {
		tok, err := s.Change(context.Background(), forID, dirs)
		ch <- result{token: tok, err: err, at: time.Now()}
	}()
	return ch
}

// expectPending fails the test if ch delivers within d: the call is still
// waiting, as it should.
func expectPending(tb testing.TB, ch <-chan result, d time.Duration, what string) {
	tb.Helper()
	select {
	case r := <-ch:
		tb.Fatalf("%s returned (granted %v, err %v) while it should wait", what, r.granted, r.err)
	case <-time.After(d):
	}
}

// await waits for ch, failing the test after d.
func await(tb testing.TB, ch <-chan result, d time.Duration, what string) result {
	tb.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(d):
		tb.Fatalf("%s did not return within %v", what, d)
		return result{}
	}
}
