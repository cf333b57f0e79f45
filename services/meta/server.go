// Package meta is Stria's metadata service (MDS): it owns the namespace —
// inodes, directory entries, attributes, xattrs, symlinks, hard links and file
// layouts — in a Pebble store, serves it over NATS request/reply (one micro
// endpoint per api.MetaOps entry), publishes the changelog to JetStream, and
// destroys the stripe objects of deleted files on the OSTs.
package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stria/stria/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ServiceName is the NATS micro service name.
const ServiceName = "stria-meta"

// lockTimeout bounds a call to the lock service: a change barrier waits for
// other clients to answer their recalls, or for an unresponsive one's lease
// to run out.
const lockTimeout = 20 * time.Second

// maxInFlight bounds the requests handled at once; more wait in NATS.
const maxInFlight = 256

// Server is one metadata server. Several may run for one file system: one
// leads and serves, the others wait as standbys.
type Server struct {
	cfg  Config
	nc   *nats.Conn
	etcd *clientv3.Client
	log  *slog.Logger

	ready   chan struct{}
	started atomic.Bool

	st    *store
	locks ChangeBarriers
	// lockSession, when locks is lockd over NATS, keeps meta's lease.
	lockSession *api.LockSession
	reg         *api.OSTRegistry
	ost         *api.OSTClient
	localOSTs   *api.LocalOSTs
	rr          atomic.Uint32 // rotating first stripe for offset -1
	// space is the store's free space, for Data-on-MDT (dom.go).
	space freeSpace

	// Request gate: closing refuses new requests; handlers tracks the
	// running ones so the store is closed only after they end. Lock order:
	// gate is held only around the closing check, never with store.mu.
	gate     sync.RWMutex
	closing  bool
	handlers sync.WaitGroup
	// For ServeMeta, set before ready is closed: the handlers, their
	// context, and a slot per request running (maxInFlight, as NATS has).
	opTable    map[string]opFunc
	serveCtx   context.Context
	localSlots chan struct{}

	wakePublisher chan struct{}
	wakeDestroyer chan struct{}
	wakeSyncer    chan struct{}
	syncerGrace   time.Duration // see the constant; tests lengthen it
	handOff       destroyHandOff
	awaitingSync  awaitingSync // objects whose deletion is not durable yet
	fatal         chan error

	stats map[string]*opStats

	// Test hooks.
	fs          vfs.FS // Pebble file system; nil is the OS
	noPublisher bool   // leave the changelog outbox unpublished
}

// New checks the configuration and returns a server; Run starts it.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if deps.NATS == nil || deps.Etcd == nil {
		return nil, errors.New("meta: NATS and etcd connections are required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:           cfg,
		nc:            deps.NATS,
		etcd:          deps.Etcd,
		log:           log.With("component", "meta", "fsname", cfg.FSName),
		ready:         make(chan struct{}),
		wakePublisher: make(chan struct{}, 1),
		wakeDestroyer: make(chan struct{}, 1),
		wakeSyncer:    make(chan struct{}, 1),
		syncerGrace:   syncerGrace,
		fatal:         make(chan error, 1),
		stats:         newOpStats(),
		localSlots:    make(chan struct{}, maxInFlight),
		locks:         deps.Barriers,
		localOSTs:     deps.OSTs,
		space:         freeSpace{dir: cfg.DataDir},
	}
	if s.locks == nil {
		s.lockSession = api.NewLockSession(deps.NATS, cfg.FSName, lockTimeout, log)
		s.locks = s.lockSession
	}
	return s, nil
}

func newOpStats() map[string]*opStats {
	m := make(map[string]*opStats, len(api.MetaOps))
	for _, op := range api.MetaOps {
		m[op] = &opStats{}
	}
	return m
}

// Ready is closed once the server leads and serves requests.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// OSTsListed returns a channel closed once this server knows of at least
// n OSTs and so can lay new files out on them. Call after Ready.
func (s *Server) OSTsListed(n int) <-chan struct{} { return s.reg.Listed(n) }

// Run opens the store, waits to be elected leader, then serves until ctx
// ends, leadership is lost or the store fails. It returns after every
// goroutine it started has ended; a clean shutdown returns nil.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("meta: Run called twice")
	}
	st, err := openStore(s.cfg.DataDir, s.fs, s.log)
	if err != nil {
		return fmt.Errorf("meta: %w", err)
	}
	defer func() {
		if err := st.close(); err != nil {
			s.log.Warn("closing metadata store", "err", err)
		}
	}()
	st.onFail = func(err error) {
		select {
		case s.fatal <- err:
		default:
		}
	}
	s.st = st

	ttl := int((s.cfg.LeaseTTL + time.Second - 1) / time.Second)
	sess, err := concurrency.NewSession(s.etcd, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("meta: etcd session: %w", err)
	}
	defer sess.Close()
	election := concurrency.NewElection(sess, api.MetaLeaderPrefix(s.cfg.FSName))
	host, _ := os.Hostname()
	s.log.Info("campaigning for leadership", "fsid", st.fsid)
	if err := election.Campaign(ctx, fmt.Sprintf("%s/%d/%s", host, os.Getpid(), st.fsid)); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("meta: campaigning for leadership: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := election.Resign(rctx); err != nil {
			s.log.Warn("resigning leadership", "err", err)
		}
	}()
	s.log.Info("elected leader")

	s.reg = api.NewOSTRegistry(s.etcd, s.cfg.FSName, s.log)
	s.ost = api.NewOSTClient(s.cfg.OSTTimeout)
	s.ost.Sockets = s.reg
	s.ost.Local = s.localOSTs
	defer s.ost.Close()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait
	wg.Go(func() { s.reg.Run(runCtx) })
	if s.lockSession != nil {
		wg.Go(func() { s.lockSession.Run(runCtx) })
	}
	select {
	case <-s.reg.Ready():
	case <-ctx.Done():
		return nil
	}
	if !s.noPublisher {
		wg.Go(func() { s.runPublisher(runCtx) })
	}
	wg.Go(func() { s.runDestroyer(runCtx) })
	wg.Go(func() { s.runSyncer(runCtx) })

	svc, err := micro.AddService(s.nc, micro.Config{
		Name:         ServiceName,
		Version:      "0.1.0",
		Description:  "Stria metadata service for file system " + s.cfg.FSName,
		Metadata:     map[string]string{"fsname": s.cfg.FSName, "fsid": st.fsid},
		StatsHandler: s.statsData,
	})
	if err != nil {
		return fmt.Errorf("meta: starting NATS service: %w", err)
	}
	// A fixed set of workers serves the requests: their stacks, grown by
	// the first requests, stay grown (a goroutine per request spent a
	// tenth of meta's CPU growing stacks).
	work := make(chan request)
	for range maxInFlight {
		wg.Go(func() {
			for r := range work {
				s.serve(runCtx, r.req, r.op, r.fn)
				s.handlers.Done()
			}
		})
	}
	// stopServing stops taking requests and waits for those running.
	stopServing := func() {
		if err := svc.Stop(); err != nil {
			s.log.Warn("stopping NATS service", "err", err)
		}
		s.gate.Lock()
		s.closing = true
		s.gate.Unlock()
		s.handlers.Wait()
		close(work)
	}
	ops := s.ops()
	for _, op := range api.MetaOps {
		fn, ok := ops[op]
		if !ok {
			stopServing()
			return fmt.Errorf("meta: no handler for operation %q", op)
		}
		if err := svc.AddEndpoint(op, s.endpoint(work, op, fn), micro.WithEndpointSubject(api.MetaSubject(s.cfg.FSName, op))); err != nil {
			stopServing()
			return fmt.Errorf("meta: adding endpoint %s: %w", op, err)
		}
	}
	s.opTable, s.serveCtx = ops, runCtx
	close(s.ready)
	s.log.Info("serving", "inodes", st.inodes.Load())

	var runErr error
	select {
	case <-ctx.Done():
	case <-sess.Done():
		runErr = errors.New("meta: lost leadership: etcd session ended")
	case err := <-s.fatal:
		runErr = fmt.Errorf("meta: %w", err)
	}
	if ctx.Err() != nil && s.st.failed.Load() == nil {
		runErr = nil // asked to stop: the session ends with ctx too
	}
	stopServing()
	// A clean stop leaves nothing unsynced: the syncer may still be giving
	// the last changes their grace.
	if s.st.failed.Load() == nil {
		err := s.st.syncWAL()
		if err == nil {
			err = s.st.markClean()
		}
		if err != nil && runErr == nil {
			runErr = fmt.Errorf("meta: %w", err)
		}
	}
	s.log.Info("stopped", "err", runErr)
	return runErr
}

// opFunc serves one operation. decode takes a JSON request (NATS); call
// takes the request value a caller in this process passed (ServeMeta), so
// neither side spends time on JSON.
type opFunc struct {
	decode func(ctx context.Context, data []byte) (any, error)
	call   func(ctx context.Context, req any) (any, error)
}

// handle adapts a typed handler: strict decoding, or the value as given,
// then fn. Replies are fn's own values either way: handlers build them
// afresh (layouts cloned), so no caller shares memory with meta's state.
func handle[Req any, Resp any](fn func(context.Context, *Req) (Resp, error)) opFunc {
	return opFunc{
		decode: func(ctx context.Context, data []byte) (any, error) {
			var r Req
			if len(data) == 0 {
				data = []byte("{}")
			}
			if err := api.Decode(data, &r); err != nil {
				return nil, err
			}
			return fn(ctx, &r)
		},
		call: func(ctx context.Context, req any) (any, error) {
			var r Req
			switch v := req.(type) {
			case Req:
				r = v
			case *Req:
				if v != nil {
					r = *v
				}
			case nil:
			default:
				return nil, api.Errorf(api.CodeInvalid, "malformed request: a %T, not a %T", req, r)
			}
			return fn(ctx, &r)
		},
	}
}

func (s *Server) ops() map[string]opFunc {
	return map[string]opFunc{
		api.OpLookup:        handle(s.lookup),
		api.OpGetAttr:       handle(s.getattr),
		api.OpSetAttr:       handle(s.setattr),
		api.OpCreate:        handle(s.create),
		api.OpLink:          handle(s.link),
		api.OpUnlink:        handle(s.unlink),
		api.OpRename:        handle(s.rename),
		api.OpReadDir:       handle(s.readdir),
		api.OpReadlink:      handle(s.readlink),
		api.OpGetXattr:      handle(s.getxattr),
		api.OpSetXattr:      handle(s.setxattr),
		api.OpListXattr:     handle(s.listxattr),
		api.OpRemoveXattr:   handle(s.removexattr),
		api.OpGetLayout:     handle(s.getlayout),
		api.OpSetLayout:     handle(s.setlayout),
		api.OpUpdateSize:    handle(s.updatesize),
		api.OpSync:          handle(s.sync),
		api.OpStatFS:        handle(s.statfs),
		api.OpReleaseOrphan: handle(s.releaseOrphan),
		api.OpDoMWrite:      handle(s.domwrite),
		api.OpDoMRead:       handle(s.domread),
		api.OpLayoutIntent:  handle(s.layoutintent),
	}
}

// request is one received request on its way to a worker.
type request struct {
	req micro.Request
	op  string
	fn  opFunc
}

// endpoint returns the micro handler of one operation. NATS delivers one
// subscription's messages one at a time, so each request goes to one of the
// maxInFlight workers (waiting while all are busy, which leaves further
// requests in NATS): concurrent mutations are what group commit folds into
// shared fsyncs.
func (s *Server) endpoint(work chan<- request, op string, fn opFunc) micro.HandlerFunc {
	return func(req micro.Request) {
		if !s.admit() {
			s.replyError(req, op, errShuttingDown)
			return
		}
		work <- request{req: req, op: op, fn: fn}
	}
}

var errShuttingDown = api.Errorf(api.CodeUnavailable, "metadata service is shutting down")

// admit counts a request in (s.handlers, which the caller marks done)
// unless meta is shutting down.
func (s *Server) admit() bool {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closing {
		return false
	}
	s.handlers.Add(1)
	return true
}

// Replies are published on the request's reply subject directly rather than
// through micro.Request: micro reads its request state for its statistics as
// soon as the handler returns, which here is before the reply is sent. The
// error headers are micro's own, so clients see no difference; per-operation
// counts and errors are in the stats' data (opStats).

func (s *Server) serve(ctx context.Context, req micro.Request, op string, fn opFunc) {
	resp, e := s.handle(ctx, req.Headers().Get(api.HeaderClient), op, func(ctx context.Context) (any, error) {
		return fn.decode(ctx, req.Data())
	})
	if e == nil {
		data, err := encodeReply(resp)
		if err == nil {
			s.reply(req, op, &nats.Msg{Data: data})
			return
		}
		e = s.failed(op, api.Errorf(api.CodeInternal, "encoding %s reply: %v", op, err))
	}
	s.sendError(req, op, e)
}

// encodeReply is a handler's reply as JSON (some are JSON already).
func encodeReply(resp any) ([]byte, error) {
	if data, ok := resp.(json.RawMessage); ok {
		return data, nil
	}
	return json.Marshal(resp)
}

func (s *Server) reply(req micro.Request, op string, m *nats.Msg) {
	if req.Reply() == "" {
		return // nobody waits
	}
	m.Subject = req.Reply()
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Warn("sending reply", "op", op, "err", err)
	}
}

// replyError answers a request refused before it reached its handler.
func (s *Server) replyError(req micro.Request, op string, err error) {
	s.sendError(req, op, s.failed(op, err))
}

// sendError answers with e in micro's error headers.
func (s *Server) sendError(req micro.Request, op string, e *api.Error) {
	s.reply(req, op, &nats.Msg{Header: nats.Header{
		micro.ErrorHeader:     []string{e.Msg},
		micro.ErrorCodeHeader: []string{string(e.Code)},
	}})
}

// handle runs one request for lock client id (may be empty or invalid:
// then none) and returns its reply, or the error a client gets.
func (s *Server) handle(ctx context.Context, client, op string, run func(context.Context) (any, error)) (resp any, failure *api.Error) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("request handler panicked", "op", op, "panic", p)
			resp, failure = nil, s.failed(op, api.Errorf(api.CodeInternal, "internal error in %s", op))
		}
		s.stats[op].observe(time.Since(start))
	}()
	if client != "" && api.ValidClientID(client) == nil {
		ctx = context.WithValue(ctx, clientKey{}, client)
	}
	resp, err := run(ctx)
	if err != nil {
		return nil, s.failed(op, err)
	}
	return resp, nil
}

// failed logs and counts a failed request and returns the error its
// client gets: a code, and a message fit for a header.
func (s *Server) failed(op string, err error) *api.Error {
	e := api.AsError(err)
	code := e.Code
	if code == api.CodeOK {
		code = api.CodeInternal
	}
	msg := sanitize(e.Msg)
	if msg == "" {
		msg = string(code)
	}
	switch code {
	case api.CodeInternal, api.CodeIO, api.CodeCorrupt:
		s.log.Error("request failed", "op", op, "code", code, "err", msg)
	default:
		s.log.Debug("request refused", "op", op, "code", code, "err", msg)
	}
	if st := s.stats[op]; st != nil {
		st.errors.Add(1)
		st.lastError.Store(&msg)
	}
	return &api.Error{Code: code, Msg: msg}
}

// ServeMeta answers one request from a client in this process (`stria
// up` gives it to its gateway) as op's NATS endpoint would: the same
// handler, errors, statistics and bound on requests running, on the
// caller's goroutine, with the request and reply as values rather than
// JSON. Through NATS, a call and its reply took ten goroutine hand-offs
// and a fifth of a namespace change's CPU; JSON another tenth.
//
// Unlike a call through NATS it does not give up after the client's
// timeout: the handler runs to its end, as it does in meta either way.
func (s *Server) ServeMeta(client, op string, req any) (any, error) {
	select {
	case <-s.ready:
	default:
		return nil, api.Errorf(api.CodeUnavailable, "metadata service is not serving yet")
	}
	fn, ok := s.opTable[op]
	if !ok {
		return nil, api.Errorf(api.CodeInvalid, "unknown metadata operation %q", op)
	}
	if !s.admit() {
		return nil, s.failed(op, errShuttingDown)
	}
	defer s.handlers.Done()
	s.localSlots <- struct{}{}
	defer func() { <-s.localSlots }()
	resp, e := s.handle(s.serveCtx, client, op, func(ctx context.Context) (any, error) {
		return fn.call(ctx, req)
	})
	if e != nil {
		return nil, e
	}
	return resp, nil
}

// opStats counts one operation's requests as handled (micro's own counts
// see only the hand-off to a goroutine).
type opStats struct {
	requests  atomic.Uint64
	errors    atomic.Uint64
	nanos     atomic.Int64
	lastError atomic.Pointer[string]
}

func (o *opStats) observe(d time.Duration) {
	if o != nil {
		o.requests.Add(1)
		o.nanos.Add(int64(d))
	}
}

// statsData is an endpoint's stats data.
func (s *Server) statsData(e *micro.Endpoint) any {
	o := s.stats[e.Name]
	if o == nil {
		return nil
	}
	n := o.requests.Load()
	out := map[string]any{"requests": n, "errors": o.errors.Load(), "processing_time": time.Duration(o.nanos.Load())}
	if n > 0 {
		out["average_processing_time"] = time.Duration(o.nanos.Load() / int64(n))
	}
	if p := o.lastError.Load(); p != nil {
		out["last_error"] = *p
	}
	return out
}

// sanitize makes an error text safe for a NATS header value.
func sanitize(msg string) string {
	msg = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, msg)
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	return msg
}

// syncerGrace is how long the syncer lets changes gather before it syncs
// them: one WAL sync then covers every change applied in the meantime.
// Each sync costs far more than its fdatasync (the publisher's round trip
// to JetStream, a batch of deletes, goroutines woken): with a stream of
// creates, the Stria process's CPU per create fell by a fifth from 2 ms to
// 25-50 ms (alternating fresh instances). Durability is promised only by
// OpSync, which does not wait; anything else may be lost by a crash of
// meta within this window (a local file system's journal commits every
// 5 s; Lustre's MDT's too, though its clients replay what was lost).
const syncerGrace = 50 * time.Millisecond

// runSyncer makes applied changes durable soon after, off their reply path;
// one sync covers every change applied before it starts, so a burst of
// them costs one or two. Then it hands the objects of durable deletions to
// the destroyer.
func (s *Server) runSyncer(ctx context.Context) {
	var woke uint64 // the durable seq the publisher was last woken for
	grace := time.NewTimer(s.syncerGrace)
	grace.Stop() // started by each wake below
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wakeSyncer:
		}
		grace.Reset(s.syncerGrace)
		select {
		case <-ctx.Done():
			grace.Stop()
			return
		case <-grace.C:
		}
		if s.st.durableCommits.Load() < s.st.commits.Load() {
			if err := s.st.syncWAL(); err != nil {
				return // the store failed; Run stops meta
			}
		}
		// Records made durable, by this sync or an fsync's, can be
		// published now: the publisher wakes once per sync, not per change.
		if seq := s.st.durableSeq.Load(); seq > woke {
			woke = seq
			s.wake(s.wakePublisher)
		}
		if objs := s.awaitingSync.durable(s.st.durableCommits.Load()); len(objs) > 0 {
			// Hand them to the destroyer directly, so it need not search
			// the queue on disk for them.
			s.handOff.add(objs)
			s.wake(s.wakeDestroyer)
		}
	}
}

func (s *Server) wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// maxRelocks bounds how often one change widens its change barrier.
const maxRelocks = 3

// maxUnsyncedCommits bounds the changes applied but not yet durable: past
// it a change waits for a sync (push back, and a bound on the inode
// numbers a crash can lose, see inoGapAfterCrash).
const maxUnsyncedCommits = 1 << 16

// mutate runs one namespace change and replies once it is applied: every
// client sees it at once, and it is durable after the next WAL sync, which
// the syncer makes within syncerGrace and OpSync waits for. That is the
// durability POSIX gives names and attributes: a create, rename or unlink
// is durable once the file or its directory is fsynced (each an OpSync),
// as on a local file system. Data is another matter: the OSTs acknowledge
// a fsync only once the bytes are on their disks. dirs are the directories
// whose locks are expected to cover what the change alters (a guess: see
// below).
//
// fn runs under a change barrier (api/lock.go): every other client's lock
// on the directories whose covered state fn alters is recalled first, and
// none is granted until the change is applied, so no client's cache
// outlives it. The barrier is taken on dirs before fn runs; if fn turns out
// to alter what another directory covers (a moved or hard-linked file, a
// removed directory), nothing is written and the change is retried with
// that directory too.
func (s *Server) mutate(ctx context.Context, dirs []uint64, fn func(t *txn) error) error {
	allowed := make(map[uint64]struct{}, len(dirs))
	for _, d := range dirs {
		if d != 0 {
			allowed[d] = struct{}{}
		}
	}
	var queued []api.StripeObject
	record := func(t *txn) error {
		t.allowed = allowed
		if err := fn(t); err != nil {
			return err
		}
		queued = t.queued
		return nil
	}
	for attempt := 0; ; attempt++ {
		token, err := s.barrier(ctx, allowed)
		if err != nil {
			return err
		}
		t, err := s.st.applyUnsynced(record)
		s.endBarrier(token)
		var more *needLocks
		if errors.As(err, &more) && attempt < maxRelocks {
			for _, d := range more.dirs {
				allowed[d] = struct{}{}
			}
			continue
		}
		if err != nil {
			return err
		}
		if !t.wrote {
			return nil
		}
		if t.commit-min(t.commit, s.st.durableCommits.Load()) > maxUnsyncedCommits {
			if err := s.st.waitDurable(t.commit); err != nil {
				return err
			}
		}
		if len(queued) > 0 {
			// Objects go to the destroyer only once their deletion is
			// durable: the syncer hands them over after its sync.
			s.awaitingSync.add(t.commit, queued)
		}
		s.wake(s.wakeSyncer)
		return nil
	}
}

// barrier takes a change barrier on dirs for the client that asked (from
// ctx); token 0 means there was none to take.
func (s *Server) barrier(ctx context.Context, dirs map[uint64]struct{}) (uint64, error) {
	if len(dirs) == 0 {
		return 0, nil
	}
	list := make([]uint64, 0, len(dirs))
	for d := range dirs {
		list = append(list, d)
	}
	token, err := s.locks.Change(ctx, clientOf(ctx), list)
	if err != nil {
		return 0, fmt.Errorf("taking the change barrier: %w", err)
	}
	return token, nil
}

func (s *Server) endBarrier(token uint64) {
	if token != 0 {
		s.locks.Done(token)
	}
}

// clientKey carries, in a request's context, the lock client id of the
// mount that asked.
type clientKey struct{}

func clientOf(ctx context.Context) string {
	id, _ := ctx.Value(clientKey{}).(string)
	return id
}

// coverGuess is the directory covering inode ino as stored now, for a change
// barrier taken before the change reads it under the store's lock.
func (s *Server) coverGuess(ino uint64) uint64 {
	in, err := s.st.getInode(s.st.db, ino)
	if err != nil {
		return 0
	}
	return coverOf(in)
}
