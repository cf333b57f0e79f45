package meta

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/stria/stria/api"
)

// destroyBatch bounds the objects destroyed in one pass.
const destroyBatch = 1024

// destroyParallel bounds concurrent destroy calls.
const destroyParallel = 8

// destroyHandOff carries the objects that durable mutations put on the
// destroy queue to the destroyer, so that in steady state it never searches
// the queue on disk: a scan from its start would step over the tombstone of
// every entry already done, which costs more the busier the file system is.
type destroyHandOff struct {
	mu   sync.Mutex
	objs []api.StripeObject
}

func (h *destroyHandOff) add(objs []api.StripeObject) {
	h.mu.Lock()
	h.objs = append(h.objs, objs...)
	h.mu.Unlock()
}

func (h *destroyHandOff) take() []api.StripeObject {
	h.mu.Lock()
	defer h.mu.Unlock()
	objs := h.objs
	h.objs = nil
	return objs
}

// awaitingSync holds the objects of deletions applied but not yet durable,
// by commit number, until the syncer's sync covers them.
type awaitingSync struct {
	mu      sync.Mutex
	waiting []awaiting
}

type awaiting struct {
	commit uint64
	objs   []api.StripeObject
}

func (a *awaitingSync) add(commit uint64, objs []api.StripeObject) {
	a.mu.Lock()
	a.waiting = append(a.waiting, awaiting{commit, objs})
	a.mu.Unlock()
}

// durable returns, and forgets, the objects of deletions up to commit.
func (a *awaitingSync) durable(commit uint64) []api.StripeObject {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []api.StripeObject
	keep := a.waiting[:0]
	for _, w := range a.waiting {
		if w.commit <= commit {
			out = append(out, w.objs...)
		} else {
			keep = append(keep, w)
		}
	}
	a.waiting = keep
	return out
}

// runDestroyer removes the stripe objects on the destroy queue from their
// OSTs. An entry leaves the queue only once its OST confirmed the destroy.
// Objects queued while it runs are handed to it in memory; the queue on disk
// is scanned at start (entries from before a restart) and, with backoff,
// after any failure (an OST that is down keeps its entries until it is back).
func (s *Server) runDestroyer(ctx context.Context) {
	bo := backoff{min: 200 * time.Millisecond, max: 30 * time.Second}
	retry := time.NewTimer(0) // the first scan at once
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wakeDestroyer:
			if err := s.destroyHandedOff(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("destroy queue; will retry", "err", err)
				retry.Reset(bo.next())
			}
		case <-retry.C:
			done, pending, err := s.destroyPass(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("destroy queue; will retry", "err", err)
			}
			if done > 0 {
				bo.reset()
			}
			switch {
			case pending == 0 && err == nil:
				bo.reset()
			case done >= destroyBatch:
				retry.Reset(0) // more work right away
			default:
				retry.Reset(bo.next())
			}
		}
	}
}

// destroyHandedOff destroys the objects mutations handed over. A failure
// leaves the entries on disk for the next scan.
func (s *Server) destroyHandedOff(ctx context.Context) error {
	objs := s.handOff.take()
	if len(objs) == 0 {
		return nil
	}
	_, err := s.destroyObjects(ctx, objs)
	return err
}

// destroyPass scans the queue on disk and destroys up to destroyBatch
// objects whose OST is live. It returns how many were destroyed and how many
// remain.
func (s *Server) destroyPass(ctx context.Context) (done, pending int, err error) {
	// Read the queue first, then make sure what was read is durable, so an
	// object is never destroyed for a deletion a crash could still undo.
	it, err := s.st.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxDestroy}, UpperBound: []byte{pfxDestroy + 1}})
	if err != nil {
		return 0, 0, err
	}
	// Loaded after the iterator's snapshot: covers every commit it sees.
	seen := s.st.commits.Load()
	var work []api.StripeObject
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) != 13 {
			continue
		}
		pending++
		obj := api.StripeObject{ObjID: binary.BigEndian.Uint64(k[1:9]), OST: binary.BigEndian.Uint32(k[9:13])}
		if _, live := s.reg.Lookup(obj.OST); !live || len(work) >= destroyBatch {
			continue
		}
		work = append(work, obj)
	}
	if err := it.Close(); err != nil {
		return 0, pending, err
	}
	if len(work) == 0 {
		return 0, pending, nil
	}
	// The deletions that queued these were synced before their replies, so
	// this rarely costs an fsync of its own.
	if err := s.st.waitDurable(seen); err != nil {
		return 0, pending, err
	}
	done, err = s.destroyObjects(ctx, work)
	return done, pending - done, err
}

// destroyObjects destroys durable queue entries on their OSTs, each OST's
// share in one request (api.OSTDestroy lists them), and takes the destroyed
// ones off the queue. Objects whose OST is not registered stay.
func (s *Server) destroyObjects(ctx context.Context, objs []api.StripeObject) (done int, err error) {
	byOST := map[uint32][]uint64{}
	for _, obj := range objs {
		byOST[obj.OST] = append(byOST[obj.OST], obj.ObjID)
	}
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		firstEr error
		sem     = make(chan struct{}, destroyParallel)
		b       = s.st.db.NewBatch()
	)
	defer b.Close()
	fail := func(err error) {
		if firstEr == nil {
			firstEr = err
		}
	}
	for ost, ids := range byOST {
		info, ok := s.reg.Lookup(ost)
		if !ok {
			fail(api.Errorf(api.CodeUnavailable, "OST %d is not registered", ost))
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, s.cfg.OSTTimeout)
			n, err := s.ost.Destroy(cctx, info.Addr, ids)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fail(err)
			}
			for _, id := range ids[:n] {
				b.Delete(destroyKey(id, ost), nil)
			}
			done += n
		})
	}
	wg.Wait()
	if !b.Empty() {
		// Not synced: a lost delete only repeats a destroy, which succeeds.
		if err := b.Commit(pebble.NoSync); err != nil {
			return done, err
		}
	}
	if done > 0 {
		s.log.Debug("destroyed stripe objects", "count", done)
	}
	return done, firstEr
}
