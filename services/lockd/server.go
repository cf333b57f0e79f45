// Package lockd is Stria's lock service (LDLM): it grants clients shared
// locks on directories, under which they cache names and attributes, and
// recalls them when meta is about to change what they cover. The protocol is
// described in the api package (lock.go). State lives in memory: a restarted
// lockd starts empty and lets no change through for one lease, by which time
// every lock the previous instance granted has lapsed.
package lockd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stria/stria/api"
)

// ServiceName is the NATS micro service name.
const ServiceName = "stria-lockd"

// Server is the lock service of one file system. One instance serves it:
// the lock table is in its memory.
type Server struct {
	cfg      Config
	nc       *nats.Conn
	log      *slog.Logger
	instance string

	ready   chan struct{}
	started atomic.Bool
	// graceEnd is when changes may start: a lease after start.
	graceEnd time.Time

	mu        sync.Mutex
	clients   map[string]*client
	dirs      map[uint64]*dirState
	barriers  map[uint64]*barrier
	nextToken uint64
	// wake is closed, and replaced, whenever a barrier ends or a recall
	// finishes: enqueues waiting on either look again.
	wake chan struct{}
}

type client struct {
	lastPing time.Time
	local    bool // meta in this process (Change): never reaped
	evicted  bool
	held     map[uint64]struct{} // directories it holds shared locks on
	barriers map[uint64]struct{} // tokens of its change barriers
	recalls  map[*recall]struct{}
}

func newClient(local bool) *client {
	return &client{local: local, held: map[uint64]struct{}{}, barriers: map[uint64]struct{}{}, recalls: map[*recall]struct{}{}}
}

type dirState struct {
	readers  map[string]struct{}
	barriers map[uint64]*barrier
	recalls  map[string]*recall // by client: a recall on its way
}

type barrier struct {
	token  uint64
	holder string
	forID  string
	dirs   []uint64
	// at is when the barrier was granted (zero while its recalls are on
	// their way): a barrier whose end never comes lapses a lease after.
	at time.Time
}

// recall is one callback to one client; done closes once the client
// answered or was dropped.
type recall struct {
	client string
	dirs   []uint64
	done   chan struct{}
}

// New checks the configuration and returns a server; Run starts it.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if deps.NATS == nil {
		return nil, errors.New("lockd: a NATS connection is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("lockd: instance id: %w", err)
	}
	return &Server{
		cfg:      cfg,
		nc:       deps.NATS,
		log:      log.With("component", "lockd", "fsname", cfg.FSName),
		instance: hex.EncodeToString(b[:]),
		ready:    make(chan struct{}),
		clients:  map[string]*client{localHolder: newClient(true)},
		dirs:     map[uint64]*dirState{},
		barriers: map[uint64]*barrier{},
		wake:     make(chan struct{}),
	}, nil
}

// Ready is closed once the service answers requests.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("lockd: Run called twice")
	}
	s.graceEnd = time.Now()
	if !s.cfg.FreshNATS {
		s.graceEnd = s.graceEnd.Add(s.cfg.Lease)
	}
	svc, err := micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     "0.1.0",
		Description: "Stria lock service for file system " + s.cfg.FSName,
		Metadata:    map[string]string{"fsname": s.cfg.FSName, "instance": s.instance},
	})
	if err != nil {
		return fmt.Errorf("lockd: starting NATS service: %w", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	var (
		wg      sync.WaitGroup
		gate    sync.RWMutex // closing is set under it once the service stops
		closing bool
	)
	defer func() {
		// micro ends its subscriptions in the background: a request may
		// still arrive; it is refused rather than started.
		if err := svc.Stop(); err != nil {
			s.log.Warn("stopping NATS service", "err", err)
		}
		// The unsubscriptions are on their way; a round trip makes sure
		// the server has them, so that once Run returns no request reaches
		// this instance (a restarted lockd's clients met this one's
		// "stopping" after it had returned).
		if err := s.nc.Flush(); err != nil {
			s.log.Warn("stopping NATS service", "err", err)
		}
		gate.Lock()
		closing = true
		gate.Unlock()
		cancel() // waiting operations give up
		wg.Wait()
	}()
	stopping := api.Errorf(api.CodeUnavailable, "lock service is stopping")
	// Enqueues and changes may wait (for barriers, for recalls): each runs
	// in its own goroutine so one waiting never holds up the others.
	async := func(fn func(context.Context, micro.Request) (any, error)) micro.HandlerFunc {
		return func(req micro.Request) {
			gate.RLock()
			defer gate.RUnlock()
			if closing {
				s.respond(req, nil, stopping)
				return
			}
			wg.Go(func() { resp, err := fn(runCtx, req); s.respond(req, resp, err) })
		}
	}
	inline := func(fn func(context.Context, micro.Request) (any, error)) micro.HandlerFunc {
		return func(req micro.Request) { resp, err := fn(runCtx, req); s.respond(req, resp, err) }
	}
	handlers := map[string]micro.HandlerFunc{
		api.LockOpPing:    inline(s.ping),
		api.LockOpEnqueue: async(s.enqueue),
		api.LockOpCancel:  inline(s.cancel),
		api.LockOpChange:  async(s.change),
		api.LockOpDone:    inline(s.done),
	}
	for _, op := range api.LockOps {
		if err := svc.AddEndpoint(op, handlers[op], micro.WithEndpointSubject(api.LockSubject(s.cfg.FSName, op))); err != nil {
			return fmt.Errorf("lockd: adding endpoint %s: %w", op, err)
		}
	}
	wg.Go(func() { s.reap(runCtx) })
	// Ready means serving: the server knows the endpoints' subscriptions.
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("lockd: registering endpoints: %w", err)
	}
	close(s.ready)
	s.log.Info("serving", "instance", s.instance, "lease", s.cfg.Lease)
	<-ctx.Done()
	s.log.Info("stopped")
	return nil
}

// respond sends a handler's reply, or its error with NATS micro's error
// headers. It publishes on the reply subject itself rather than through
// micro.Request, whose state micro reads for its statistics as soon as the
// handler returns: a waiting operation replies after that.
func (s *Server) respond(req micro.Request, resp any, err error) {
	if req.Reply() == "" {
		return
	}
	m := &nats.Msg{Subject: req.Reply()}
	if err != nil {
		e := api.AsError(err)
		code := e.Code
		if code == api.CodeOK {
			code = api.CodeInternal
		}
		msg := e.Msg
		if msg == "" {
			msg = string(code)
		}
		m.Header = nats.Header{micro.ErrorHeader: []string{msg}, micro.ErrorCodeHeader: []string{string(code)}}
	} else if m.Data, err = json.Marshal(resp); err != nil {
		m.Header = nats.Header{micro.ErrorHeader: []string{"encoding reply: " + err.Error()}, micro.ErrorCodeHeader: []string{string(api.CodeInternal)}}
	}
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Warn("sending reply", "err", err)
	}
}

// decode decodes a request strictly and checks the client id it names
// (client returns it).
func decode[T any](req micro.Request, client func(*T) string) (*T, error) {
	var r T
	if err := api.Decode(req.Data(), &r); err != nil {
		return nil, err
	}
	if err := checkClient(client(&r)); err != nil {
		return nil, err
	}
	return &r, nil
}

// known returns a live client, or CodeEvicted. Called with mu held.
func (s *Server) known(id string) (*client, error) {
	c := s.clients[id]
	if c == nil || c.evicted {
		return nil, api.Errorf(api.CodeEvicted, "lock client %s is not registered (evicted or its lease lapsed)", id)
	}
	return c, nil
}

func (s *Server) ping(_ context.Context, req micro.Request) (any, error) {
	r, err := decode(req, func(r *api.LockPingReq) string { return r.Client })
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[r.Client]
	if c == nil && r.Register {
		c = newClient(false)
		s.clients[r.Client] = c
		s.log.Debug("client registered", "client", r.Client)
	}
	if _, err := s.known(r.Client); err != nil {
		return nil, err
	}
	c.lastPing = time.Now()
	return api.LockPingResp{Instance: s.instance, LeaseNS: int64(s.cfg.Lease)}, nil
}

// blocked reports whether client id must wait before a shared lock on d:
// another client's change barrier is on it, or a recall of id's own lock
// is still on its way. Called with mu held.
func (ds *dirState) blocked(id string) bool {
	if ds == nil {
		return false
	}
	for _, b := range ds.barriers {
		if b.forID != id {
			return true
		}
	}
	_, recalling := ds.recalls[id]
	return recalling
}

func (s *Server) enqueue(ctx context.Context, req micro.Request) (any, error) {
	r, err := decode(req, func(r *api.LockEnqueueReq) string { return r.Client })
	if err != nil {
		return nil, err
	}
	if err := api.ValidLockDirs(r.Dirs); err != nil {
		return nil, err
	}
	// A waiting enqueue gives up after a lease: the client only asked in
	// order to cache, and can ask again.
	deadline := time.NewTimer(s.cfg.Lease)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		c, err := s.known(r.Client)
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		wait := false
		for _, d := range r.Dirs {
			if s.dirs[d].blocked(r.Client) {
				wait = true
				break
			}
		}
		if !wait {
			for _, d := range r.Dirs {
				s.dir(d).readers[r.Client] = struct{}{}
				c.held[d] = struct{}{}
			}
			s.mu.Unlock()
			return api.LockGrantResp{Instance: s.instance}, nil
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-deadline.C:
			return nil, api.Errorf(api.CodeBusy, "directories stay under change; ask again later")
		case <-ctx.Done():
			return nil, api.Errorf(api.CodeUnavailable, "lock service is stopping")
		}
	}
}

// dir returns d's state, creating it. Called with mu held.
func (s *Server) dir(d uint64) *dirState {
	ds := s.dirs[d]
	if ds == nil {
		ds = &dirState{readers: map[string]struct{}{}, barriers: map[uint64]*barrier{}, recalls: map[string]*recall{}}
		s.dirs[d] = ds
	}
	return ds
}

// tidy forgets d's state once nothing is left in it. Called with mu held.
func (s *Server) tidy(d uint64) {
	if ds := s.dirs[d]; ds != nil && len(ds.readers) == 0 && len(ds.barriers) == 0 && len(ds.recalls) == 0 {
		delete(s.dirs, d)
	}
}

// broadcast wakes every waiting enqueue. Called with mu held.
func (s *Server) broadcast() {
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *Server) cancel(_ context.Context, req micro.Request) (any, error) {
	r, err := decode(req, func(r *api.LockCancelReq) string { return r.Client })
	if err != nil {
		return nil, err
	}
	if err := api.ValidLockDirs(r.Dirs); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.clients[r.Client]; c != nil {
		for _, d := range r.Dirs {
			delete(c.held, d)
			if ds := s.dirs[d]; ds != nil {
				delete(ds.readers, r.Client)
				s.tidy(d)
			}
		}
	}
	return struct{}{}, nil
}

func (s *Server) change(ctx context.Context, req micro.Request) (any, error) {
	r, err := decode(req, func(r *api.LockChangeReq) string { return r.Client })
	if err != nil {
		return nil, err
	}
	if r.For != "" {
		if err := api.ValidClientID(r.For); err != nil {
			return nil, err
		}
	}
	if err := api.ValidLockDirs(r.Dirs); err != nil {
		return nil, err
	}
	token, err := s.takeBarrier(ctx, r.Client, r.For, r.Dirs)
	if err != nil {
		return nil, err
	}
	return api.LockChangeResp{Token: token}, nil
}

// checkClient validates a client id from the wire; the local holder's is
// not one a remote client may use.
func checkClient(id string) error {
	if err := api.ValidClientID(id); err != nil {
		return err
	}
	if id == localHolder {
		return api.Errorf(api.CodeInvalid, "lock client id %q is reserved", id)
	}
	return nil
}

// localHolder holds the change barriers of a meta server in this process.
const localHolder = "local"

// Change takes a change barrier for a meta server in this process (stria
// up): the same table and protocol as LockOpChange, without the two NATS
// round trips every namespace change would otherwise pay.
func (s *Server) Change(ctx context.Context, forID string, dirs []uint64) (uint64, error) {
	if err := api.ValidLockDirs(dirs); err != nil {
		return 0, err
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return 0, api.Errorf(api.CodeUnavailable, "lock service not started")
	}
	return s.takeBarrier(ctx, localHolder, forID, dirs)
}

// Done ends a change barrier Change took.
func (s *Server) Done(token uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.barriers[token]; b != nil && b.holder == localHolder {
		s.endBarrier(b)
	}
}

// takeBarrier puts a change barrier on dirs for holder, on behalf of client
// forID, and returns once every other client's lock on them is recalled.
func (s *Server) takeBarrier(ctx context.Context, holder, forID string, dirs []uint64) (uint64, error) {
	// Locks the previous instance granted may still be trusted until a
	// lease after this one started.
	if wait := time.Until(s.graceEnd); wait > 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return 0, api.Errorf(api.CodeUnavailable, "lock service is stopping")
		}
	}
	s.mu.Lock()
	c, err := s.known(holder)
	if err != nil {
		s.mu.Unlock()
		return 0, err
	}
	s.nextToken++
	b := &barrier{token: s.nextToken, holder: holder, forID: forID, dirs: dirs}
	s.barriers[b.token] = b
	c.barriers[b.token] = struct{}{}
	// Recall every other client's lock on the directories: one callback
	// per client, or the one already on its way.
	var waits []chan struct{}
	fresh := map[string]*recall{}
	for _, d := range dirs {
		ds := s.dir(d)
		ds.barriers[b.token] = b
		for id := range ds.readers {
			if id == forID {
				continue
			}
			rc := ds.recalls[id]
			if rc == nil {
				if rc = fresh[id]; rc == nil {
					rc = &recall{client: id, done: make(chan struct{})}
					fresh[id] = rc
					s.clients[id].recalls[rc] = struct{}{}
					waits = append(waits, rc.done)
				}
				rc.dirs = append(rc.dirs, d)
				ds.recalls[id] = rc
			} else if fresh[id] != rc {
				waits = append(waits, rc.done)
			}
		}
	}
	s.mu.Unlock()
	for _, rc := range fresh {
		go s.sendRecall(rc)
	}
	for _, w := range waits {
		// Each ends: the client answers, or its lease runs out.
		select {
		case <-w:
		case <-ctx.Done():
			s.mu.Lock()
			s.endBarrier(b)
			s.mu.Unlock()
			return 0, api.Errorf(api.CodeUnavailable, "change barrier abandoned: %v", ctx.Err())
		}
	}
	s.mu.Lock()
	b.at = time.Now()
	s.mu.Unlock()
	return b.token, nil
}

// sendRecall calls the client back and, once it answered, takes the locks
// away; a client that does not answer is evicted and loses them when its
// lease runs out (reap).
func (s *Server) sendRecall(rc *recall) {
	data, err := json.Marshal(api.LockRevokeReq{Dirs: rc.dirs})
	if err == nil {
		_, err = s.nc.Request(api.LockCallbackSubject(s.cfg.FSName, rc.client), data, s.cfg.CallbackTimeout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[rc.client]
	if err != nil {
		if c != nil && !c.evicted {
			s.log.Warn("client did not answer a lock recall: evicted; its locks go when its lease runs out", "client", rc.client, "err", err)
			c.evicted = true
		}
		return
	}
	for _, d := range rc.dirs {
		if c != nil {
			delete(c.held, d)
		}
		if ds := s.dirs[d]; ds != nil {
			delete(ds.readers, rc.client)
		}
	}
	s.finish(rc)
}

// finish ends a recall. Called with mu held.
func (s *Server) finish(rc *recall) {
	select {
	case <-rc.done:
		return
	default:
	}
	close(rc.done)
	if c := s.clients[rc.client]; c != nil {
		delete(c.recalls, rc)
	}
	for _, d := range rc.dirs {
		if ds := s.dirs[d]; ds != nil && ds.recalls[rc.client] == rc {
			delete(ds.recalls, rc.client)
			s.tidy(d)
		}
	}
	s.broadcast()
}

func (s *Server) done(_ context.Context, req micro.Request) (any, error) {
	r, err := decode(req, func(r *api.LockDoneReq) string { return r.Client })
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.barriers[r.Token]; b != nil && b.holder == r.Client {
		s.endBarrier(b)
	}
	return struct{}{}, nil
}

// endBarrier removes a change barrier. Called with mu held.
func (s *Server) endBarrier(b *barrier) {
	delete(s.barriers, b.token)
	if c := s.clients[b.holder]; c != nil {
		delete(c.barriers, b.token)
	}
	for _, d := range b.dirs {
		if ds := s.dirs[d]; ds != nil {
			delete(ds.barriers, b.token)
			s.tidy(d)
		}
	}
	s.broadcast()
}

// reap drops clients whose lease ran out (dead, partitioned or evicted) with
// everything they held, and barriers whose end never came.
func (s *Server) reap(ctx context.Context) {
	tick := time.NewTicker(s.cfg.Lease / 8)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		s.mu.Lock()
		for id, c := range s.clients {
			if !c.local && now.Sub(c.lastPing) > s.cfg.Lease {
				s.drop(id, c)
			}
		}
		for _, b := range s.barriers {
			if !b.at.IsZero() && now.Sub(b.at) > s.cfg.Lease {
				s.log.Warn("change barrier outlived a lease: ended", "holder", b.holder, "dirs", b.dirs)
				s.endBarrier(b)
			}
		}
		s.mu.Unlock()
	}
}

// drop forgets a client and all it held. Called with mu held.
func (s *Server) drop(id string, c *client) {
	s.log.Info("lock client dropped", "client", id, "evicted", c.evicted, "locks", len(c.held))
	for d := range c.held {
		if ds := s.dirs[d]; ds != nil {
			delete(ds.readers, id)
			s.tidy(d)
		}
	}
	for t := range c.barriers {
		if b := s.barriers[t]; b != nil {
			s.endBarrier(b)
		}
	}
	for rc := range c.recalls {
		s.finish(rc)
	}
	delete(s.clients, id)
	s.broadcast()
}
