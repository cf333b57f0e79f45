package lockd

import (
	"context"
	"encoding/json"
	"flag"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stria/stria/api"
)

// wantCode fails the test unless err carries code.
func wantCode(tb testing.TB, what string, err error, code api.Code) {
	tb.Helper()
	if got := api.CodeOf(err); got != code {
		tb.Fatalf("%s: got %v (code %q), want code %q", what, err, got, code)
	}
}

func wantRevoked(tb testing.TB, who string, s *session, want ...[]uint64) {
	tb.Helper()
	got := s.revoked()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("%s was recalled %v, want %v (its ids %v, OnLost calls %d)", who, got, want, s.seenIDs(), len(s.losses()))
	}
}

// TestChangeRecallsOtherClients: a change barrier for a third party recalls
// a holder's lock (OnRevoke runs before Change returns), holds back the
// holder's new enqueue until Done, and after Done the holder locks again.
func TestChangeRecallsOtherClients(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	a := startSession(t, fs)
	m := startSession(t, fs)
	const d = 42

	a.mustEnqueue(t, d)
	l.pastGrace()
	tok := m.mustChange(t, "third-party", d)
	if tok == 0 {
		t.Fatal("Change returned token 0")
	}
	wantRevoked(t, "a", a, []uint64{d})

	res := goEnqueue(a, d)
	expectPending(t, res, testLease/5, "a's Enqueue under a barrier")
	doneAt := time.Now()
	m.Done(tok)
	r := await(t, res, callTimeout, "a's Enqueue after Done")
	if r.err != nil || !r.granted {
		t.Fatalf("a's Enqueue after Done = %v, %v; want granted", r.granted, r.err)
	}
	if r.at.Before(doneAt) {
		t.Fatalf("a's Enqueue returned %v before Done", doneAt.Sub(r.at))
	}

	// a answered: it kept its registration.
	if got := a.seenIDs(); len(got) != 1 || len(a.losses()) != 0 {
		t.Fatalf("a: ids %v, %d losses; want one id, no loss", got, len(a.losses()))
	}
	// The new lock is real: the next change recalls it again.
	tok = m.mustChange(t, "third-party", d)
	wantRevoked(t, "a", a, []uint64{d}, []uint64{d})
	m.Done(tok)
}

// TestChangeForHolderKeepsItsLock: a change asked by a lock holder (For ==
// its id) leaves that holder's lock alone, recalls everyone else's, and does
// not hold back the asking client's own enqueues.
func TestChangeForHolderKeepsItsLock(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	a := startSession(t, fs)
	b := startSession(t, fs)
	m := startSession(t, fs)
	const d = 7

	a.mustEnqueue(t, d)
	b.mustEnqueue(t, d)
	l.pastGrace()
	tok := m.mustChange(t, a.ID(), d)
	wantRevoked(t, "a (the asking client)", a)
	wantRevoked(t, "b", b, []uint64{d})

	start := time.Now()
	a.mustEnqueue(t, d)
	if el := time.Since(start); el > testLease/2 {
		t.Fatalf("the asking client's Enqueue took %v under its own barrier", el)
	}
	res := goEnqueue(b, d)
	expectPending(t, res, testLease/5, "b's Enqueue under a's barrier")
	m.Done(tok)
	if r := await(t, res, callTimeout, "b's Enqueue after Done"); r.err != nil || !r.granted {
		t.Fatalf("b's Enqueue after Done = %v, %v", r.granted, r.err)
	}

	// a still holds its lock: a change nobody asked for recalls it.
	tok = m.mustChange(t, "", d)
	wantRevoked(t, "a", a, []uint64{d})
	wantRevoked(t, "b", b, []uint64{d}, []uint64{d})
	m.Done(tok)
}

// TestEnqueueWaitsForBarrier: an enqueue naming a directory under another
// client's barrier is granted only after Done; other directories are not
// held back.
func TestEnqueueWaitsForBarrier(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	b := startSession(t, fs)
	m := startSession(t, fs)
	const d1, d2 = 100, 200

	l.pastGrace()
	tok := m.mustChange(t, "someone", d1)

	start := time.Now()
	b.mustEnqueue(t, d2)
	if el := time.Since(start); el > testLease/2 {
		t.Fatalf("Enqueue of a directory under no barrier took %v", el)
	}
	res := goEnqueue(b, d2, d1)
	expectPending(t, res, testLease/4, "an Enqueue naming a directory under a barrier")
	doneAt := time.Now()
	m.Done(tok)
	r := await(t, res, callTimeout, "the Enqueue after Done")
	if r.err != nil || !r.granted {
		t.Fatalf("Enqueue after Done = %v, %v; want granted", r.granted, r.err)
	}
	if r.at.Before(doneAt) {
		t.Fatal("the Enqueue returned before Done")
	}
	waitFor(t, "the barrier to be gone", callTimeout, func() bool { return l.barrierCount() == 0 })
}

// TestUnansweredRecallEvicts: a client with no callback subscription fails
// its recall: it is told CodeEvicted at once (ping and enqueue), but the
// change waits until its lease has run out, and then it is gone.
func TestUnansweredRecallEvicts(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	m := startSession(t, fs)
	const d, d2 = 5, 6

	l.pastGrace()
	x := newRaw(t, fs)
	x.register()
	if err := x.enqueue(d, d2); err != nil {
		t.Fatal(err)
	}
	p := x.keepPinging(testLease / 10)
	waitFor(t, "x's first ping", callTimeout, func() bool { last, _ := p.times(); return !last.IsZero() })

	t0 := time.Now()
	res := goChange(m, "someone", d)
	waitFor(t, "x to be evicted", testLease/2, func() bool { return l.isEvicted(x.id) })
	wantCode(t, "enqueue of an evicted client", x.enqueue(d2), api.CodeEvicted)
	_, err := x.ping(true)
	wantCode(t, "registering an evicted id again", err, api.CodeEvicted)
	_, err = x.change("", 99)
	wantCode(t, "change by an evicted client", err, api.CodeEvicted)

	r := await(t, res, 2*testLease, "the change")
	if r.err != nil {
		t.Fatal(r.err)
	}
	lastSent, evictedAt := p.times()
	if evictedAt.IsZero() || !evictedAt.Before(r.at) {
		t.Fatalf("x's pings were told evicted at %v, the change returned at %v", evictedAt, r.at)
	}
	if el := evictedAt.Sub(t0); el > testLease/2 {
		t.Fatalf("x was told evicted %v after the recall", el)
	}
	if r.at.Before(lastSent.Add(testLease)) {
		t.Fatalf("the change returned %v after x's last ping: before its lease of %v ran out", r.at.Sub(lastSent), testLease)
	}
	if el := r.at.Sub(t0); el > 2*testLease {
		t.Fatalf("the change took %v: longer than x's lease", el)
	}
	if l.hasClient(x.id) {
		t.Fatal("x is still known after the change")
	}
	_, err = x.ping(false)
	wantCode(t, "ping after being dropped", err, api.CodeEvicted)
	wantCode(t, "enqueue after being dropped", x.enqueue(d), api.CodeEvicted)
	m.Done(r.token)
}

// TestEvictedSessionRegistersAgain: a LockSession whose OnRevoke blocks past
// the callback timeout is evicted: the change waits out its lease, the
// session calls OnLost (no longer Valid) and registers under a new id,
// whose locks are recalled like anyone's.
func TestEvictedSessionRegistersAgain(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	a := startSession(t, fs)
	m := startSession(t, fs)
	const d = 9
	id0 := a.ID()

	a.mustEnqueue(t, d)
	release := make(chan struct{})
	released := false
	unblock := func() {
		if !released {
			released = true
			close(release)
		}
	}
	t.Cleanup(unblock)
	a.setHook(func([]uint64) { <-release })
	l.pastGrace()

	t0 := time.Now()
	res := goChange(m, "someone", d)
	waitFor(t, "a to register again", 2*testLease, func() bool {
		return len(a.losses()) > 0 && a.Valid() && a.ID() != "" && a.ID() != id0
	})
	if lv := a.losses(); lv[0] {
		t.Fatal("Valid() was true inside OnLost")
	}
	ids := a.seenIDs()
	if len(ids) != 2 || ids[0] != id0 || ids[1] == id0 || ids[1] != a.ID() {
		t.Fatalf("OnID saw %v (first id %s, now %s); want the first then a new one", ids, id0, a.ID())
	}

	r := await(t, res, 2*testLease, "the change")
	if r.err != nil {
		t.Fatal(r.err)
	}
	// The session pings every lease/4, so its last ping before eviction was
	// at most that long before the recall.
	if el := r.at.Sub(t0); el < testLease/2 || el > 2*testLease {
		t.Fatalf("the change took %v; want about a lease (%v), not the callback timeout", el, testLease)
	}
	wantRevoked(t, "a", a, []uint64{d})
	old := &rawClient{tb: t, nc: connect(t), fs: fs, id: id0}
	_, err := old.ping(false)
	wantCode(t, "ping of the evicted id", err, api.CodeEvicted)
	unblock()

	// (Whether the barrier still holds the new id's Enqueue back here is
	// TestBarrierAfterSlowRecallHoldsBackGrants.)
	m.Done(r.token)
	waitFor(t, "the barrier to end", callTimeout, func() bool { return l.barrierCount() == 0 })
	a.mustEnqueue(t, d)
	tok := m.mustChange(t, "someone", d)
	wantRevoked(t, "a", a, []uint64{d}, []uint64{d})
	m.Done(tok)
}

// TestSilentClientDropped: a client that stops pinging is forgotten about a
// lease after its last ping, with its locks: a later change neither calls
// it back nor waits for it. A pinging client is kept.
func TestSilentClientDropped(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	b := startSession(t, fs)
	m := startSession(t, fs)
	const d = 11

	x := newRaw(t, fs)
	recalls := x.listen(true)
	s0 := time.Now()
	x.register()
	r0 := time.Now()
	if err := x.enqueue(d); err != nil {
		t.Fatal(err)
	}
	b.mustEnqueue(t, d)

	waitFor(t, "x to be dropped", 3*testLease, func() bool { return !l.hasClient(x.id) })
	seen := time.Now()
	if seen.Before(s0.Add(testLease)) {
		t.Fatalf("x dropped %v after its ping: before its lease of %v", seen.Sub(s0), testLease)
	}
	if late := seen.Sub(r0.Add(testLease)); late > testLease/2 {
		t.Fatalf("x dropped %v after its lease ran out", late)
	}
	if !l.hasClient(b.ID()) || len(b.seenIDs()) != 1 || len(b.losses()) != 0 {
		t.Fatal("the pinging session b was dropped too")
	}
	_, err := x.ping(false)
	wantCode(t, "ping after being dropped", err, api.CodeEvicted)

	l.pastGrace()
	start := time.Now()
	tok := m.mustChange(t, "someone", d)
	if el := time.Since(start); el > testLease/2 {
		t.Fatalf("the change took %v with only live holders", el)
	}
	if n := len(recalls); n != 0 {
		t.Fatalf("x was called back %d times after being dropped", n)
	}
	wantRevoked(t, "b", b, []uint64{d})
	m.Done(tok)
}

// TestRestart: a new lockd on the same NATS has a new instance; a running
// session loses its locks (OnLost, not Valid meanwhile) and registers with
// the new one; a change on the new one waits out its grace period.
func TestRestart(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	cfg := testConfig(fs)
	l1 := startLockd(t, cfg)
	a := startSession(t, fs)
	const d, d2 = 3, 4
	id0 := a.ID()
	a.mustEnqueue(t, d)

	l1.stop(t)
	l2 := startLockd(t, cfg)
	if l2.instance == l1.instance {
		t.Fatalf("both lockd instances are %s", l1.instance)
	}
	x := newRaw(t, fs)
	resp := x.register()
	if resp.Instance != l2.instance || resp.LeaseNS != int64(testLease) {
		t.Fatalf("ping answered %+v; want instance %s and lease %d", resp, l2.instance, int64(testLease))
	}
	x.keepPinging(testLease / 4)

	// A change asked well within the new instance's grace period...
	sent := time.Now()
	if sent.After(l2.graceEnd.Add(-testLease / 2)) {
		t.Fatalf("too slow: the grace period is nearly over (%v left)", time.Until(l2.graceEnd))
	}
	ch := make(chan result, 1)
	go func() {
		tok, err := x.change("", d2)
		ch <- result{token: tok, err: err, at: time.Now()}
	}()

	waitFor(t, "a to register with the new lockd", 2*testLease, func() bool {
		return len(a.losses()) > 0 && a.Valid() && a.ID() != "" && a.ID() != id0
	})
	if lv := a.losses(); lv[0] {
		t.Fatal("Valid() was true inside OnLost")
	}
	if ids := a.seenIDs(); len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("OnID saw %v; want two different ids", ids)
	}
	if !l2.hasClient(a.ID()) {
		t.Fatal("the new lockd does not know a's new id")
	}
	a.mustEnqueue(t, d)

	// ... comes back only once it is over.
	r := await(t, ch, 2*testLease, "the change on the new instance")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.at.Before(l2.started.Add(testLease)) {
		t.Fatalf("the change came back %v after the restart, within the grace period of %v", r.at.Sub(l2.started), testLease)
	}
	if err := x.done(r.token); err != nil {
		t.Fatal(err)
	}
	// a's lock from the new instance is recalled by a change.
	tok, err := x.change("", d)
	if err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, "a", a, []uint64{d})
	if err := x.done(tok); err != nil {
		t.Fatal(err)
	}
}

// TestGracePeriod: a fresh lockd registers clients and grants locks at once,
// but lets a change through only a lease after it started; afterwards
// changes are not delayed.
func TestGracePeriod(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	const d, d2 = 1, 2

	x, y := newRaw(t, fs), newRaw(t, fs)
	recalls := y.listen(true)
	start := time.Now()
	x.register()
	y.register()
	if err := y.enqueue(d); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > testLease/2 {
		t.Fatalf("registering and locking took %v during the grace period", el)
	}
	x.keepPinging(testLease / 4)
	y.keepPinging(testLease / 4)

	tok, err := x.change("", d)
	at := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if at.Before(l.started.Add(testLease)) {
		t.Fatalf("a change came back %v after lockd started, within its grace period of %v", at.Sub(l.started), testLease)
	}
	if at.After(l.started.Add(2 * testLease)) {
		t.Fatalf("a change came back %v after lockd started: well after the grace period", at.Sub(l.started))
	}
	if n := len(recalls); n != 1 {
		t.Fatalf("y was called back %d times, want 1", n)
	}
	if err := x.done(tok); err != nil {
		t.Fatal(err)
	}

	t1 := time.Now()
	if _, err := x.change("", d2); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(t1); el > testLease/2 {
		t.Fatalf("a change after the grace period took %v", el)
	}
}

// TestMalformedRequests: every operation answers a malformed request with
// a CodeInvalid micro error (a change without waiting out the grace
// period), ignores garbage sent without a reply subject, and serves well
// formed requests afterwards.
func TestMalformedRequests(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	nc := connect(t)

	obj := func(kv ...any) string {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	many := make([]uint64, api.MaxLockDirs+1)
	for i := range many {
		many[i] = uint64(i + 1)
	}
	type tc struct{ name, body string }
	common := []tc{
		{"empty body", ""},
		{"bad JSON", `{"client":`},
		{"not an object", `[1]`},
		{"trailing data", `{"client":"c1","dirs":[1]} {}`},
	}
	perOp := map[string][]tc{
		api.LockOpPing: {
			{"unknown field", obj("client", "c1", "register", true, "bogus", 1)},
			{"wrong type", obj("client", 7)},
		},
		api.LockOpEnqueue: {{"unknown field", obj("client", "c1", "dirs", []uint64{1}, "bogus", 1)}},
		api.LockOpCancel:  {{"unknown field", obj("client", "c1", "dirs", []uint64{1}, "for", "c2")}},
		api.LockOpChange:  {{"unknown field", obj("client", "c1", "dirs", []uint64{1}, "token", 1)}},
		api.LockOpDone: {
			{"unknown field", obj("client", "c1", "token", 1, "dirs", []uint64{1})},
			{"wrong type", obj("client", "c1", "token", "one")},
			{"negative token", obj("client", "c1", "token", -1)},
		},
	}
	// "local" is reserved for the in-process holder (Server.Change).
	badIDs := []string{"", "UPPER", "a.b", "a*", "a>", "a b", "é", strings.Repeat("a", 65), "local"}
	for _, op := range api.LockOps {
		for _, id := range badIDs {
			var body string
			switch op {
			case api.LockOpPing:
				body = obj("client", id, "register", true)
			case api.LockOpDone:
				body = obj("client", id, "token", 1)
			default:
				body = obj("client", id, "dirs", []uint64{1})
			}
			perOp[op] = append(perOp[op], tc{"client id " + id, body})
		}
	}
	for _, op := range []string{api.LockOpEnqueue, api.LockOpCancel, api.LockOpChange} {
		perOp[op] = append(perOp[op],
			tc{"no dirs", obj("client", "c1")},
			tc{"empty dirs", obj("client", "c1", "dirs", []uint64{})},
			tc{"too many dirs", obj("client", "c1", "dirs", many)},
			tc{"inode 0", obj("client", "c1", "dirs", []uint64{0})},
			tc{"inode 0 among others", obj("client", "c1", "dirs", []uint64{3, 0})},
			tc{"negative inode", obj("client", "c1", "dirs", []int{-1})},
			tc{"dirs not a list", obj("client", "c1", "dirs", 5)},
		)
	}
	perOp[api.LockOpChange] = append(perOp[api.LockOpChange],
		tc{"bad for", obj("client", "c1", "for", "NOT-OK", "dirs", []uint64{1})},
		tc{"for with a dot", obj("client", "c1", "for", "a.b", "dirs", []uint64{1})},
	)

	for _, op := range api.LockOps {
		for _, c := range append(append([]tc{}, common...), perOp[op]...) {
			sent := time.Now()
			msg, err := nc.Request(api.LockSubject(fs, op), []byte(c.body), callTimeout)
			if err != nil {
				t.Fatalf("%s/%s: %v", op, c.name, err)
			}
			if code := msg.Header.Get("Nats-Service-Error-Code"); code != string(api.CodeInvalid) {
				t.Errorf("%s/%s (%q): error code %q, reply %q; want %q", op, c.name, c.body, code, msg.Data, api.CodeInvalid)
				continue
			}
			if desc := msg.Header.Get("Nats-Service-Error"); desc == "" {
				t.Errorf("%s/%s: no error description", op, c.name)
			}
			if el := time.Since(sent); el > testLease/2 {
				t.Errorf("%s/%s: rejected after %v (waited out the grace period?)", op, c.name, el)
			}
		}
		// Garbage without a reply subject is dropped quietly.
		if err := nc.Publish(api.LockSubject(fs, op), []byte("garbage")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// The limits themselves are fine: a 64-character id, 64 directories.
	long := newRaw(t, fs)
	long.id = strings.Repeat("a", 64)
	long.register()
	if err := long.enqueue(many[:api.MaxLockDirs]...); err != nil {
		t.Fatalf("enqueue of %d directories: %v", api.MaxLockDirs, err)
	}

	// The service still works.
	a := startSession(t, fs)
	m := startSession(t, fs)
	a.mustEnqueue(t, 77)
	l.pastGrace()
	tok := m.mustChange(t, "", 77)
	wantRevoked(t, "a", a, []uint64{77})
	m.Done(tok)
	waitFor(t, "the barrier to end", callTimeout, func() bool { return l.barrierCount() == 0 })
}

// TestCancelGivesLocksBack: a cancelled lock is not recalled by a later
// change; the locks still held are, and once all are given back the lock
// table is empty.
func TestCancelGivesLocksBack(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	a := startSession(t, fs)
	m := startSession(t, fs)
	ctx := context.Background()
	const d1, d2, d3, d9 = 21, 22, 23, 29

	a.mustEnqueue(t, d1, d2, d3)
	if err := a.Cancel(ctx, []uint64{d1}); err != nil {
		t.Fatal(err)
	}
	// Giving back what is not held, or as an unknown client, is harmless.
	if err := a.Cancel(ctx, []uint64{d9}); err != nil {
		t.Fatal(err)
	}
	if err := newRaw(t, fs).cancelLocks(d2); err != nil {
		t.Fatalf("cancel by an unknown client: %v", err)
	}

	l.pastGrace()
	start := time.Now()
	tok := m.mustChange(t, "someone", d1)
	if el := time.Since(start); el > testLease/2 {
		t.Fatalf("a change on a cancelled lock took %v", el)
	}
	wantRevoked(t, "a", a)
	m.Done(tok)

	tok = m.mustChange(t, "someone", d1, d2)
	wantRevoked(t, "a", a, []uint64{d2})
	m.Done(tok)

	if err := a.Cancel(ctx, []uint64{d3}); err != nil {
		t.Fatal(err)
	}
	tok = m.mustChange(t, "someone", d3)
	wantRevoked(t, "a", a, []uint64{d2})
	m.Done(tok)
	waitFor(t, "the lock table to empty", callTimeout, func() bool { return l.dirCount() == 0 && l.barrierCount() == 0 })
}

// TestRecallBatchesDirs: one callback per client names exactly the recalled
// directories it holds (once each, even if the change names one twice); a
// change nobody asked for recalls every holder.
func TestRecallBatchesDirs(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	a := startSession(t, fs)
	b := startSession(t, fs)
	m := startSession(t, fs)
	const d1, d2, d3, d4 = 31, 32, 33, 34

	a.mustEnqueue(t, d1, d2, d3)
	b.mustEnqueue(t, d2)
	l.pastGrace()

	tok := m.mustChange(t, "", d1, d4, d3)
	wantRevoked(t, "a", a, []uint64{d1, d3})
	wantRevoked(t, "b", b)
	m.Done(tok)

	tok = m.mustChange(t, "", d2, d2)
	wantRevoked(t, "a", a, []uint64{d1, d3}, []uint64{d2})
	wantRevoked(t, "b", b, []uint64{d2})
	m.Done(tok)
}

// TestConcurrentChangesShareRecall: a second change on a directory whose
// recall is on its way waits for that recall instead of sending another,
// and sends a fresh one only for the directories not yet recalled.
func TestConcurrentChangesShareRecall(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	cfg := testConfig(fs)
	cfg.CallbackTimeout = 400 * time.Millisecond
	l := startLockd(t, cfg)
	m1 := startSession(t, fs)
	m2 := startSession(t, fs)
	const d, d2 = 41, 42
	l.pastGrace()

	x := newRaw(t, fs)
	recalls := x.listen(false)
	x.register()
	x.keepPinging(testLease / 4)
	if err := x.enqueue(d, d2); err != nil {
		t.Fatal(err)
	}
	next := func(want ...uint64) *nats.Msg {
		t.Helper()
		select {
		case msg := <-recalls:
			var r api.LockRevokeReq
			if err := json.Unmarshal(msg.Data, &r); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.Dirs, want) {
				t.Fatalf("recall of %v, want %v", r.Dirs, want)
			}
			return msg
		case <-time.After(testLease / 2):
			t.Fatalf("no recall of %v came", want)
			return nil
		}
	}

	c1 := goChange(m1, "", d)
	first := next(d)
	c2 := goChange(m2, "", d, d2)
	second := next(d2) // d's recall is already on its way
	if n := l.barrierCount(); n != 2 {
		t.Fatalf("%d barriers, want 2", n)
	}
	if err := first.Respond([]byte("{}")); err != nil {
		t.Fatal(err)
	}
	r1 := await(t, c1, testLease/4, "the first change, once its recall is answered")
	expectPending(t, c2, testLease/10, "the second change, whose recall of d2 is unanswered")
	if err := second.Respond([]byte("{}")); err != nil {
		t.Fatal(err)
	}
	r2 := await(t, c2, testLease/4, "the second change, once both recalls are answered")
	if r1.err != nil || r2.err != nil || r1.token == r2.token {
		t.Fatalf("changes returned (%d, %v) and (%d, %v)", r1.token, r1.err, r2.token, r2.err)
	}
	if n := len(recalls); n != 0 {
		t.Fatalf("%d more recalls came", n)
	}
	if l.isEvicted(x.id) {
		t.Fatal("x answered in time but was evicted")
	}
	m1.Done(r1.token)
	m2.Done(r2.token)
	waitFor(t, "the lock table to empty", callTimeout, func() bool { return l.dirCount() == 0 })
}

// TestDoneOnlyByHolder: only the barrier's holder ends it; a Done from
// another client, with an unknown token, with a malformed client id or as
// the reserved in-process holder ends nothing.
func TestDoneOnlyByHolder(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	b := startSession(t, fs)
	l.pastGrace()
	m, other := newRaw(t, fs), newRaw(t, fs)
	m.register()
	other.register()
	const d = 51

	tok, err := m.change("someone", d)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.done(tok); err != nil {
		t.Fatal(err)
	}
	if err := m.done(tok + 1000); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"NOT-VALID", "local"} {
		bad := &rawClient{tb: t, nc: m.nc, fs: fs, id: id}
		wantCode(t, "done as "+id, bad.done(tok), api.CodeInvalid)
	}
	if n := l.barrierCount(); n != 1 {
		t.Fatalf("%d barriers after foreign Done requests, want 1", n)
	}
	res := goEnqueue(b, d)
	expectPending(t, res, testLease/5, "an Enqueue under the barrier")
	if err := m.done(tok); err != nil {
		t.Fatal(err)
	}
	if n := l.barrierCount(); n != 0 {
		t.Fatalf("%d barriers after the holder's Done", n)
	}
	if r := await(t, res, callTimeout, "the Enqueue after Done"); r.err != nil || !r.granted {
		t.Fatalf("Enqueue after Done = %v, %v", r.granted, r.err)
	}
	if err := m.done(tok); err != nil {
		t.Fatalf("a second Done: %v", err)
	}
}

// TestBarrierLapsesAfterLease: a barrier whose Done never comes ends about a
// lease after it was taken, and the enqueues it held back are granted.
func TestBarrierLapsesAfterLease(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	b := startSession(t, fs)
	l.pastGrace()
	m := newRaw(t, fs)
	m.register()
	m.keepPinging(testLease / 4)
	const d = 61

	t0 := time.Now()
	tok, err := m.change("someone", d)
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	time.Sleep(testLease / 2) // the enqueue starts in the barrier's second half
	res := goEnqueue(b, d)
	r := await(t, res, 2*testLease, "the Enqueue under a forgotten barrier")
	if r.err != nil || !r.granted {
		t.Fatalf("Enqueue = %v, %v; want granted once the barrier lapsed", r.granted, r.err)
	}
	if r.at.Before(t0.Add(testLease)) {
		t.Fatalf("granted %v after the change: the barrier lapsed before a lease", r.at.Sub(t0))
	}
	if late := r.at.Sub(t1.Add(testLease)); late > testLease/2 {
		t.Fatalf("granted %v after the barrier's lease ran out", late)
	}
	if n := l.barrierCount(); n != 0 {
		t.Fatalf("%d barriers left", n)
	}
	if err := m.done(tok); err != nil {
		t.Fatalf("a late Done: %v", err)
	}
}

// TestEnqueueGivesUp: an enqueue held back by barriers for a whole lease
// gives up with CodeBusy (and the client stays registered).
func TestEnqueueGivesUp(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	b := startSession(t, fs)
	l.pastGrace()
	m := newRaw(t, fs)
	m.register()
	m.keepPinging(testLease / 4)
	const d = 71

	tok, err := m.change("someone", d)
	if err != nil {
		t.Fatal(err)
	}
	// Keep d under a barrier: take a new one, then end the old one.
	stop := make(chan struct{})
	renewed := make(chan error, 1)
	go func() {
		var err error
		defer func() { renewed <- err }()
		for {
			select {
			case <-stop:
				err = m.done(tok)
				return
			case <-time.After(testLease / 4):
			}
			var nt uint64
			if nt, err = m.change("someone", d); err != nil {
				return
			}
			if err = m.done(tok); err != nil {
				return
			}
			tok = nt
		}
	}()
	start := time.Now()
	granted, err := b.Enqueue(context.Background(), []uint64{d})
	el := time.Since(start)
	close(stop)
	if err := <-renewed; err != nil {
		t.Fatalf("renewing the barrier: %v", err)
	}
	if granted {
		t.Fatal("granted under a barrier")
	}
	wantCode(t, "Enqueue under barriers for a lease", err, api.CodeBusy)
	if el < testLease || el > 2*testLease {
		t.Fatalf("Enqueue gave up after %v, want about a lease (%v)", el, testLease)
	}
	if ids := b.seenIDs(); len(ids) != 1 || len(b.losses()) != 0 {
		t.Fatalf("the waiting client lost its registration: ids %v, losses %v", ids, b.losses())
	}
}

// TestPingAndRegistration: an unknown client is told CodeEvicted by every
// operation and leaves nothing behind; registering answers the instance
// and the lease, and registering or pinging again renews.
func TestPingAndRegistration(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	x := newRaw(t, fs)
	const d = 81

	_, err := x.ping(false)
	wantCode(t, "ping of an unknown client", err, api.CodeEvicted)
	if l.hasClient(x.id) {
		t.Fatal("a ping without Register registered the client")
	}
	wantCode(t, "enqueue of an unknown client", x.enqueue(d), api.CodeEvicted)
	l.pastGrace()
	_, err = x.change("", d)
	wantCode(t, "change by an unknown client", err, api.CodeEvicted)
	if l.barrierCount() != 0 || l.dirCount() != 0 {
		t.Fatal("requests of an unknown client left state behind")
	}

	want := api.LockPingResp{Instance: l.instance, LeaseNS: int64(testLease)}
	for i, register := range []bool{true, true, false} {
		resp, err := x.ping(register)
		if err != nil || resp != want {
			t.Fatalf("ping %d (register %v) = %+v, %v; want %+v", i, register, resp, err, want)
		}
	}
	if err := x.enqueue(d); err != nil {
		t.Fatal(err)
	}
}

// TestSessionRegistersOnDemand: a session that is not Run registers on its
// first Change (not on Enqueue, which says "not granted"), and when lockd
// has dropped it, Change registers again under a new id (after OnLost).
func TestSessionRegistersOnDemand(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	s := openSession(t, fs)
	ctx := context.Background()
	const d = 91

	if granted, err := s.Enqueue(ctx, []uint64{d}); granted || err != nil {
		t.Fatalf("Enqueue before registration = %v, %v; want not granted", granted, err)
	}
	if s.Valid() || s.ID() != "" {
		t.Fatal("an unregistered session is valid or has an id")
	}
	if err := s.Cancel(ctx, []uint64{d}); err != nil {
		t.Fatal(err)
	}
	s.Done(1)

	l.pastGrace()
	tok := s.mustChange(t, "", d)
	id1 := s.ID()
	if id1 == "" || !s.Valid() || !l.hasClient(id1) {
		t.Fatalf("after Change: id %q, valid %v, known %v", id1, s.Valid(), l.hasClient(id1))
	}
	s.Done(tok)
	waitFor(t, "the barrier to end", callTimeout, func() bool { return l.barrierCount() == 0 })

	// Nothing renews the lease: lockd drops the client. (Change is then
	// told CodeEvicted, an error reply of a waiting operation.)
	waitFor(t, "the idle session to be dropped", 3*testLease, func() bool { return !l.hasClient(id1) })
	tok = s.mustChange(t, "", d)
	if id := s.ID(); id == "" || id == id1 {
		t.Fatalf("after being dropped, Change ran as %q (was %q)", id, id1)
	}
	if ids := s.seenIDs(); len(ids) != 2 {
		t.Fatalf("OnID saw %v, want two ids", ids)
	}
	if lv := s.losses(); len(lv) != 1 || lv[0] {
		t.Fatalf("OnLost calls (Valid inside each): %v; want one, not valid", lv)
	}
	s.Done(tok)
}

// TestConfig: Validate's bounds, the defaults, the flags, and New's checks.
func TestConfig(t *testing.T) {
	t.Parallel()
	ok := []Config{
		{},
		DefaultConfig(),
		{FSName: "a_1", Lease: 100 * time.Millisecond, CallbackTimeout: 10 * time.Millisecond},
		{Lease: 10 * time.Minute, CallbackTimeout: 10 * time.Minute},
		{Lease: time.Second, CallbackTimeout: time.Second},
	}
	for _, c := range ok {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v): %v", c, err)
		}
	}
	bad := []Config{
		{FSName: "Bad"},
		{FSName: "a.b"},
		{FSName: strings.Repeat("a", 33)},
		{Lease: 99 * time.Millisecond, CallbackTimeout: 10 * time.Millisecond},
		{Lease: 10*time.Minute + 1},
		{Lease: -time.Second},
		{CallbackTimeout: 9 * time.Millisecond},
		{Lease: time.Second, CallbackTimeout: time.Second + 1},
		{Lease: time.Second}, // the default callback timeout (5s) exceeds it
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted it", c)
		}
	}
	if d := (Config{}).withDefaults(); d != DefaultConfig() {
		t.Errorf("zero config with defaults = %+v, want %+v", d, DefaultConfig())
	}

	c := DefaultConfig()
	fset := flag.NewFlagSet("lockd", flag.ContinueOnError)
	c.AddFlags(fset)
	if err := fset.Parse([]string{"-fsname", "x", "-lease", "2s", "-callback-timeout", "300ms"}); err != nil {
		t.Fatal(err)
	}
	if want := (Config{FSName: "x", Lease: 2 * time.Second, CallbackTimeout: 300 * time.Millisecond}); c != want {
		t.Errorf("flags gave %+v, want %+v", c, want)
	}

	if _, err := New(Config{}, Deps{}); err == nil {
		t.Error("New without a NATS connection succeeded")
	}
	nc := connect(t)
	if _, err := New(Config{Lease: time.Millisecond}, Deps{NATS: nc}); err == nil {
		t.Error("New with an invalid config succeeded")
	}
	s, err := New(Config{}, Deps{NATS: nc})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg != DefaultConfig() {
		t.Errorf("New kept %+v, want the defaults", s.cfg)
	}
	s2, err := New(Config{}, Deps{NATS: nc})
	if err != nil {
		t.Fatal(err)
	}
	if s.instance == "" || s.instance == s2.instance {
		t.Errorf("instances %q and %q: want distinct", s.instance, s2.instance)
	}
}

// TestRunTwice: a second Run fails at once and leaves the first serving.
func TestRunTwice(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	if err := l.Run(context.Background()); err == nil {
		t.Fatal("a second Run succeeded")
	}
	x := newRaw(t, fs)
	x.register()
}

// TestStopWhileChangeWaitsForEvictedClient: stopping lockd while a change
// waits for a client that failed its recall must not hang Run.
func TestStopWhileChangeWaitsForEvictedClient(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	m := startSession(t, fs)
	l.pastGrace()
	x := newRaw(t, fs)
	x.register()
	if err := x.enqueue(1); err != nil {
		t.Fatal(err)
	}
	goChange(m, "", 1)
	waitFor(t, "x to be evicted", testLease/2, func() bool { return l.isEvicted(x.id) })

	l.stopped = true
	l.cancel()
	select {
	case err := <-l.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * testLease):
		t.Fatal("Run did not return after its context ended while a change waited for an evicted client")
	}
}

// TestBarrierAfterSlowRecallHoldsBackGrants: a change that had to wait out
// an evicted client's lease still gets a barrier that holds new grants back
// until Done.
func TestBarrierAfterSlowRecallHoldsBackGrants(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	m := startSession(t, fs)
	b := startSession(t, fs)
	l.pastGrace()
	const d = 101

	x := newRaw(t, fs)
	x.register()
	if err := x.enqueue(d); err != nil {
		t.Fatal(err)
	}
	x.keepPinging(testLease / 20)
	t0 := time.Now()
	tok := m.mustChange(t, "someone", d)
	if el := time.Since(t0); el < testLease/2 {
		t.Fatalf("the change took only %v: x was not evicted?", el)
	}
	res := goEnqueue(b, d)
	expectPending(t, res, testLease/2, "an Enqueue under the barrier of a change that just returned")
	doneAt := time.Now()
	m.Done(tok)
	if r := await(t, res, callTimeout, "the Enqueue after Done"); r.err != nil || !r.granted || r.at.Before(doneAt) {
		t.Fatalf("Enqueue = %v, %v at %v (Done at %v)", r.granted, r.err, r.at, doneAt)
	}
}

// TestErrorRepliesOfWaitingOps: enqueue and change, which lockd runs in
// goroutines of their own, answer errors correctly (CodeInvalid, CodeEvicted),
// many times over. Under the race detector it shows the data race of those
// replies with micro's statistics.
func TestErrorRepliesOfWaitingOps(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	cfg := testConfig(fs)
	cfg.FreshNATS = true // no grace period: a change by an unknown client is told at once
	startLockd(t, cfg)
	nc := connect(t)
	cases := []struct {
		op, body string
		code     api.Code
	}{
		{api.LockOpEnqueue, `{"client":"c1","dirs":[0]}`, api.CodeInvalid},
		{api.LockOpEnqueue, `{"client":"unknown","dirs":[1]}`, api.CodeEvicted},
		{api.LockOpChange, `{"client":"BAD","dirs":[1]}`, api.CodeInvalid},
		{api.LockOpChange, `{"client":"unknown","dirs":[1]}`, api.CodeEvicted},
	}
	for i := range 200 {
		c := cases[i%len(cases)]
		msg, err := nc.Request(api.LockSubject(fs, c.op), []byte(c.body), callTimeout)
		if err == nil {
			err = replyErr(msg, nil)
		}
		if got := api.CodeOf(err); got != c.code {
			t.Fatalf("%s %s: %v (code %q), want code %q", c.op, c.body, err, got, c.code)
		}
	}
}

// TestReadyMeansServing: once Ready is closed, a request from another
// connection is answered (no "no responders").
func TestReadyMeansServing(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	for i := range 30 {
		fs := uniqueFS()
		srv, err := New(testConfig(fs), Deps{NATS: connect(t), Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(ctx) }()
		<-srv.Ready()
		_, err = nc.Request(api.LockSubject(fs, api.LockOpDone), []byte(`{}`), callTimeout)
		cancel()
		<-done
		if err != nil {
			t.Fatalf("attempt %d: a request right after Ready: %v", i, err)
		}
	}
}

// TestFreshNATSSkipsGrace: with FreshNATS (a NATS server started with this
// lockd: no client kept a connection, so none trusts an old lock) a change
// need not wait out a grace period.
func TestFreshNATSSkipsGrace(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	cfg := testConfig(fs)
	cfg.FreshNATS = true
	startLockd(t, cfg)
	a := startSession(t, fs)
	m := startSession(t, fs)
	a.mustEnqueue(t, 5)
	start := time.Now()
	tok := m.mustChange(t, "", 5)
	if el := time.Since(start); el > testLease/2 {
		t.Fatalf("a change on a FreshNATS lockd took %v", el)
	}
	wantRevoked(t, "a", a, []uint64{5})
	m.Done(tok)
}

// TestSessionNotValidAcrossReconnect: a session whose NATS connection
// reconnected (perhaps to a restarted NATS and lockd) trusts no lock until
// its next answered ping, however much of its lease is left; a lockd that
// lived through the reconnect still knows it.
func TestSessionNotValidAcrossReconnect(t *testing.T) {
	t.Parallel()
	startNATS := func(port int) *server.Server {
		t.Helper()
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(callTimeout) {
			t.Fatal("nats did not start")
		}
		return ns
	}
	ns := startNATS(-1)
	port := ns.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { ns.Shutdown() })
	dial := func() *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond), nats.ReconnectJitter(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}

	fs := uniqueFS()
	// A long lease: only the reconnect can make the session invalid here.
	cfg := Config{FSName: fs, Lease: 10 * time.Second, CallbackTimeout: testCallback, FreshNATS: true}
	srv, err := New(cfg, Deps{NATS: dial(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })
	<-srv.Ready()
	if err := srv.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	snc := dial()
	s := api.NewLockSession(snc, fs, callTimeout, testLogger(t))
	lost := 0
	var lmu sync.Mutex
	s.OnLost = func() { lmu.Lock(); lost++; lmu.Unlock() }
	tok, err := s.Change(context.Background(), "", []uint64{1}) // registers
	if err != nil {
		t.Fatal(err)
	}
	s.Done(tok)
	id := s.ID()
	if !s.Valid() {
		t.Fatal("not valid after registering")
	}

	ns.Shutdown()
	ns = startNATS(port)
	waitFor(t, "both connections to reconnect", callTimeout, func() bool {
		return snc.IsConnected() && snc.Stats().Reconnects > 0 && srv.nc.IsConnected() && srv.nc.Stats().Reconnects > 0
	})
	if s.Valid() {
		t.Fatal("the session is valid across a reconnect it has not pinged since")
	}
	runCtx, stop := context.WithCancel(context.Background())
	sessDone := make(chan error, 1)
	go func() { sessDone <- s.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-sessDone })
	waitFor(t, "the session to ping again", callTimeout, s.Valid)
	lmu.Lock()
	defer lmu.Unlock()
	if s.ID() != id || lost != 0 {
		t.Fatalf("after the reconnect: id %s (was %s), %d losses; want the same id, none", s.ID(), id, lost)
	}
}

// TestLocalChange: Server.Change, the in-process barrier of a meta server,
// waits for the grace period (giving up with its context), recalls locks
// like LockOpChange, holds enqueues back until Server.Done, and its holder
// is never reaped; remote clients cannot end its barriers nor it theirs.
func TestLocalChange(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	bg := context.Background()
	const d, d2 = 111, 112

	if left := time.Until(l.graceEnd); left > testLease/2 {
		ctx, cancel := context.WithTimeout(bg, testLease/5)
		_, err := l.Change(ctx, "", []uint64{d})
		cancel()
		wantCode(t, "a local change whose context ends in the grace period", err, api.CodeUnavailable)
	} else {
		t.Logf("slow start (%v of the grace period left): the context check is left out", left)
	}
	_, err := l.Change(bg, "", nil)
	wantCode(t, "a local change of no directories", err, api.CodeInvalid)
	if n := l.barrierCount(); n != 0 {
		t.Fatalf("%d barriers after failed local changes", n)
	}
	a := startSession(t, fs)
	b := startSession(t, fs)
	a.mustEnqueue(t, d)

	l.pastGrace()
	if !l.hasClient(localHolder) {
		t.Fatal("the local holder was reaped")
	}
	tok, err := l.Change(bg, "", []uint64{d})
	if err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, "a", a, []uint64{d})
	res := goEnqueue(b, d)
	expectPending(t, res, testLease/5, "an Enqueue under a local barrier")

	x := newRaw(t, fs)
	x.register()
	xtok, err := x.change("", d2)
	if err != nil {
		t.Fatal(err)
	}
	l.Done(xtok) // not the local holder's
	l.Done(tok + 1000)
	if err := x.done(tok); err != nil { // not x's
		t.Fatal(err)
	}
	if n := l.barrierCount(); n != 2 {
		t.Fatalf("%d barriers, want 2", n)
	}
	if err := x.done(xtok); err != nil {
		t.Fatal(err)
	}
	l.Done(tok)
	if n := l.barrierCount(); n != 0 {
		t.Fatalf("%d barriers after both Done, want 0", n)
	}
	if r := await(t, res, callTimeout, "the Enqueue after Done"); r.err != nil || !r.granted {
		t.Fatalf("Enqueue after Done = %v, %v", r.granted, r.err)
	}
	// For a client, the local change leaves its lock alone.
	tok, err = l.Change(bg, b.ID(), []uint64{d})
	if err != nil {
		t.Fatal(err)
	}
	wantRevoked(t, "b", b)
	l.Done(tok)
}

// TestLocalChangeBeforeRun: Server.Change on a server not yet running waits
// for it, giving up with its context.
func TestLocalChangeBeforeRun(t *testing.T) {
	t.Parallel()
	srv, err := New(testConfig(uniqueFS()), Deps{NATS: connect(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = srv.Change(ctx, "", []uint64{1})
	wantCode(t, "Change before Run", err, api.CodeUnavailable)
}

// TestLocalChangeHonoursContext: a local change waiting for a client that
// failed its recall gives up when its context ends.
func TestLocalChangeHonoursContext(t *testing.T) {
	t.Parallel()
	fs := uniqueFS()
	l := startLockd(t, testConfig(fs))
	l.pastGrace()
	x := newRaw(t, fs)
	x.register()
	if err := x.enqueue(1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testLease/5)
	defer cancel()
	start := time.Now()
	_, err := l.Change(ctx, "", []uint64{1})
	if el := time.Since(start); el > testLease/2 {
		t.Fatalf("Change returned %v after it was called, long after its context (%v) ended", el, testLease/5)
	}
	if err == nil {
		t.Fatal("Change succeeded although its context ended first")
	}
}

// TestSessionConcurrentChangesAfterRestart: after a restarted lockd forgot
// a session, Changes made at once from many goroutines (a meta server
// serving many requests) all succeed: each registers again at most once.
func TestSessionConcurrentChangesAfterRestart(t *testing.T) {
	t.Parallel()
	for round := range 3 {
		fs := uniqueFS()
		cfg := testConfig(fs)
		cfg.FreshNATS = true // no grace period: the changes come back at once
		l1 := startLockd(t, cfg)
		s := openSession(t, fs) // not Run: only the Changes register
		tok := s.mustChange(t, "", 1)
		s.Done(tok)
		l1.stop(t)
		startLockd(t, cfg)

		const n = 20
		errs := make(chan error, n)
		for range n {
			go func() {
				tok, err := s.Change(context.Background(), "", []uint64{2})
				if err == nil {
					s.Done(tok)
				}
				errs <- err
			}()
		}
		failed := 0
		for range n {
			if err := <-errs; err != nil {
				failed++
				t.Logf("round %d: %v", round, err)
			}
		}
		if failed > 0 {
			t.Fatalf("round %d: %d of %d concurrent Changes failed after the restart (ids seen %d, OnLost calls %d)", round, failed, n, len(s.seenIDs()), len(s.losses()))
		}
	}
}
