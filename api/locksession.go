package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// LockSession is one lock client's registration with lockd: its id, its
// lease and its calls (see lock.go for the protocol). Run keeps the lease.
type LockSession struct {
	nc      *nats.Conn
	fsname  string
	log     *slog.Logger
	timeout time.Duration

	// OnRevoke is called, from a NATS goroutine, with the directories whose
	// locks lockd recalls; they count as given back once it returns.
	OnRevoke func(dirs []uint64)
	// OnLost is called when every lock is gone at once (evicted, or a new
	// lockd instance).
	OnLost func()
	// OnID is called with each new client id once lockd registered it.
	OnID func(id string)

	// base anchors validUntil on the monotonic clock.
	base       time.Time
	validUntil atomic.Int64 // nanoseconds since base; locks are trusted before it
	// reconnects is the connection's reconnect count when the last
	// answered ping was sent: locks are not trusted across a reconnect,
	// which may be to a restarted NATS and lockd (lockd FreshNATS).
	reconnects atomic.Uint64

	regMu sync.Mutex // one registration at a time

	mu       sync.Mutex
	id       string
	sub      *nats.Subscription
	instance string
	lease    time.Duration
}

// NewLockSession returns a session; set the callbacks, then Run it.
func NewLockSession(nc *nats.Conn, fsname string, timeout time.Duration, log *slog.Logger) *LockSession {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &LockSession{nc: nc, fsname: fsname, timeout: timeout, log: log, base: time.Now()}
}

// Valid reports whether locks granted in this session may be trusted now:
// the lease is current.
func (s *LockSession) Valid() bool {
	return int64(time.Since(s.base)) < s.validUntil.Load() && s.nc.Stats().Reconnects == s.reconnects.Load()
}

// ValidFor is how much longer locks granted in this session may be trusted
// without a further renewal (0 if not now).
func (s *LockSession) ValidFor() time.Duration {
	if !s.Valid() {
		return 0
	}
	return max(0, time.Duration(s.validUntil.Load())-time.Since(s.base))
}

// ID returns the current client id ("" before registration).
func (s *LockSession) ID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// Run registers and renews the lease until ctx ends, registering again
// under a new id whenever lockd evicts this client.
func (s *LockSession) Run(ctx context.Context) error {
	defer s.unsubscribe()
	lastWarn := time.Time{}
	for {
		wait := 100 * time.Millisecond
		if err := s.ping(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if time.Since(lastWarn) > 10*time.Second {
				s.log.Warn("lock service: cannot renew the lease; caching under locks stops until it can", "err", err)
				lastWarn = time.Now()
			}
		} else {
			s.mu.Lock()
			wait = s.lease / 4
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// ping renews the lease, registering first if there is no id.
func (s *LockSession) ping(ctx context.Context) error {
	id := s.ID()
	if id == "" {
		return s.register(ctx)
	}
	sent, reconnects := time.Since(s.base), s.nc.Stats().Reconnects
	var r LockPingResp
	err := s.rpc(ctx, LockOpPing, LockPingReq{Client: id}, &r)
	if err != nil {
		if CodeOf(err) == CodeEvicted {
			s.lost(id)
		}
		return err
	}
	return s.renewed(id, sent, reconnects, r)
}

// register picks a new id, listens for recalls under it, and registers it;
// only then does the session use it.
func (s *LockSession) register(ctx context.Context) error {
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if s.ID() != "" {
		return nil // registered while this one waited
	}
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	id := hex.EncodeToString(b[:])
	sub, err := s.nc.Subscribe(LockCallbackSubject(s.fsname, id), s.recall)
	if err != nil {
		return Errorf(CodeUnavailable, "subscribing to lock callbacks: %v", err)
	}
	sent, reconnects := time.Since(s.base), s.nc.Stats().Reconnects
	var r LockPingResp
	err = s.rpc(ctx, LockOpPing, LockPingReq{Client: id, Register: true}, &r)
	if err != nil {
		sub.Unsubscribe()
		return err
	}
	s.mu.Lock()
	old := s.sub
	s.id, s.sub, s.instance = id, sub, ""
	s.mu.Unlock()
	if old != nil {
		old.Unsubscribe()
	}
	if s.OnID != nil {
		s.OnID(id)
	}
	return s.renewed(id, sent, reconnects, r)
}

// renewed takes a ping's answer for id, sent at sent (since base) with the
// connection's reconnect count then.
func (s *LockSession) renewed(id string, sent time.Duration, reconnects uint64, r LockPingResp) error {
	if r.LeaseNS <= 0 {
		return Errorf(CodeIO, "lock service granted a lease of %d ns", r.LeaseNS)
	}
	s.mu.Lock()
	if s.id != id {
		s.mu.Unlock()
		return nil // lost meanwhile
	}
	changed := s.instance != "" && s.instance != r.Instance
	s.instance = r.Instance
	s.lease = time.Duration(r.LeaseNS)
	if changed {
		s.validUntil.Store(0)
	}
	s.mu.Unlock()
	if changed && s.OnLost != nil {
		// A new lockd knows nothing of the old one's grants.
		s.OnLost()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == id && s.instance == r.Instance {
		// A tenth of the lease is left for the two clocks' rates to
		// differ.
		s.reconnects.Store(reconnects)
		s.validUntil.Store(int64(sent + time.Duration(r.LeaseNS)*9/10))
	}
	return nil
}

func (s *LockSession) recall(m *nats.Msg) {
	var r LockRevokeReq
	if err := json.Unmarshal(m.Data, &r); err != nil {
		s.log.Warn("lock service: malformed recall", "err", err)
		return // no answer: lockd evicts us, which drops everything
	}
	if s.OnRevoke != nil {
		s.OnRevoke(r.Dirs)
	}
	if err := m.Respond([]byte("{}")); err != nil {
		s.log.Warn("lock service: answering a recall", "err", err)
	}
}

// lost forgets id after lockd evicted it: everything cached under its locks
// is dropped and the next ping registers again.
func (s *LockSession) lost(id string) {
	s.mu.Lock()
	if s.id != id {
		s.mu.Unlock()
		return
	}
	s.id, s.instance = "", ""
	s.validUntil.Store(0)
	s.mu.Unlock()
	if s.OnLost != nil {
		s.OnLost()
	}
}

func (s *LockSession) unsubscribe() {
	s.mu.Lock()
	sub := s.sub
	s.sub, s.id = nil, ""
	s.validUntil.Store(0)
	s.mu.Unlock()
	if sub != nil {
		sub.Unsubscribe()
	}
}

// call sends one request as the current client, registering first if
// needed (once, if lockd says the id is evicted).
func (s *LockSession) call(ctx context.Context, op string, req func(id string) any, resp any) error {
	for attempt := 0; ; attempt++ {
		id := s.ID()
		if id == "" {
			if err := s.ping(ctx); err != nil {
				return err
			}
			if id = s.ID(); id == "" {
				return Errorf(CodeUnavailable, "lock service: registration lost at once")
			}
		}
		err := s.rpc(ctx, op, req(id), resp)
		if CodeOf(err) == CodeEvicted && attempt == 0 {
			s.lost(id)
			continue
		}
		return err
	}
}

// rpc calls lockd's operation op.
func (s *LockSession) rpc(ctx context.Context, op string, req, resp any) error {
	return natsCall(ctx, s.nc, LockSubject(s.fsname, op), "lock", op, s.timeout, nil, req, resp)
}

// Enqueue asks for shared locks on dirs and reports whether they were
// granted by the lockd instance this session trusts.
func (s *LockSession) Enqueue(ctx context.Context, dirs []uint64) (bool, error) {
	s.mu.Lock()
	id, inst := s.id, s.instance
	s.mu.Unlock()
	if id == "" || inst == "" {
		return false, nil // not registered yet
	}
	var r LockGrantResp
	err := s.rpc(ctx, LockOpEnqueue, LockEnqueueReq{Client: id, Dirs: dirs}, &r)
	if err != nil {
		if CodeOf(err) == CodeEvicted {
			s.lost(id)
		}
		return false, err
	}
	return r.Instance == inst && s.ID() == id, nil
}

// Cancel gives locks back.
func (s *LockSession) Cancel(ctx context.Context, dirs []uint64) error {
	id := s.ID()
	if id == "" {
		return nil
	}
	return s.rpc(ctx, LockOpCancel, LockCancelReq{Client: id, Dirs: dirs}, nil)
}

// Change takes a change barrier on dirs for a change asked by client forID;
// every other client's lock on them is recalled when it returns.
func (s *LockSession) Change(ctx context.Context, forID string, dirs []uint64) (uint64, error) {
	var r LockChangeResp
	err := s.call(ctx, LockOpChange, func(id string) any { return LockChangeReq{Client: id, For: forID, Dirs: dirs} }, &r)
	return r.Token, err
}

// Done ends a change barrier. It does not wait for an answer: a barrier
// whose end is lost goes with this client's lease.
func (s *LockSession) Done(token uint64) {
	id := s.ID()
	if id == "" {
		return
	}
	data, _ := json.Marshal(LockDoneReq{Client: id, Token: token})
	if err := s.nc.Publish(LockSubject(s.fsname, LockOpDone), data); err != nil {
		s.log.Warn("lock service: ending a change barrier", "err", err)
	}
}
