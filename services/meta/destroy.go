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

// runDestroyer removes the stripe objects on the destroy queue from their
// OSTs. An entry leaves the queue only once its OST confirmed the destroy; an
// OST that is down keeps its entries, retried with backoff.
func (s *Server) runDestroyer(ctx context.Context) {
	bo := backoff{min: 200 * time.Millisecond, max: 30 * time.Second}
	for ctx.Err() == nil {
		done, pending, err := s.destroyPass(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("destroy queue", "err", err)
		}
		if done > 0 {
			bo.reset()
		}
		if pending == 0 && err == nil {
			select {
			case <-ctx.Done():
			case <-s.wakeDestroyer:
			}
			continue
		}
		if done >= destroyBatch {
			continue // more work right away
		}
		t := time.NewTimer(bo.next())
		select {
		case <-ctx.Done():
		case <-s.wakeDestroyer:
		case <-t.C:
		}
		t.Stop()
	}
}

type queued struct {
	key []byte
	obj api.StripeObject
}

// destroyPass destroys up to destroyBatch queued objects whose OST is live.
// It returns how many were destroyed and how many remain.
func (s *Server) destroyPass(ctx context.Context) (done, pending int, err error) {
	// Read the queue first, then make sure what was read is durable, so an
	// object is never destroyed for a deletion a crash could still undo.
	it, err := s.st.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxDestroy}, UpperBound: []byte{pfxDestroy + 1}})
	if err != nil {
		return 0, 0, err
	}
	// Loaded after the iterator's snapshot: covers every commit it sees.
	seen := s.st.commits.Load()
	var work []queued
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
		work = append(work, queued{key: append([]byte(nil), k...), obj: obj})
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
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		firstEr error
		sem     = make(chan struct{}, destroyParallel)
		b       = s.st.db.NewBatch()
	)
	defer b.Close()
	for _, q := range work {
		info, ok := s.reg.Lookup(q.obj.OST)
		if !ok {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, s.cfg.OSTTimeout)
			err := s.ost.Destroy(cctx, info.Addr, q.obj.ObjID)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstEr == nil {
					firstEr = err
				}
				return
			}
			b.Delete(q.key, nil)
			done++
		})
	}
	wg.Wait()
	if !b.Empty() {
		// Not synced: a lost delete only repeats a destroy, which succeeds.
		if err := b.Commit(pebble.NoSync); err != nil {
			return done, pending, err
		}
	}
	if done > 0 {
		s.log.Debug("destroyed stripe objects", "count", done)
	}
	return done, pending - done, firstEr
}
