package meta

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stria/stria/api"
)

// publishBatch is the most outbox records published before their keys are
// deleted.
const publishBatch = 512

// runPublisher publishes the changelog outbox to JetStream in seq order. It
// is woken after each durable change and publishes only records a WAL sync
// has covered, so a record a crash could still lose is never published. Each
// message carries its seq as the message ID (JetStream drops duplicates in
// its window); after a restart the outbox is published from its start, so a
// record may appear twice but is never skipped.
func (s *Server) runPublisher(ctx context.Context) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		s.log.Error("changelog: JetStream context", "err", err)
		return
	}
	backoff := backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	ready := false
	// from is the first outbox key not yet known published: reading from
	// there skips the tombstones of published records.
	from := []byte{pfxChange}
	for ctx.Err() == nil {
		if !ready {
			if err := s.ensureStream(ctx, js); err != nil {
				s.log.Warn("changelog: creating stream; will retry", "err", err)
				backoff.wait(ctx)
				continue
			}
			ready = true
		}
		if err := s.publishOutbox(ctx, js, &from); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("changelog: publishing; will retry", "err", err)
			backoff.wait(ctx)
			continue
		}
		backoff.reset()
		select {
		case <-ctx.Done():
		case <-s.wakePublisher:
		}
	}
}

func (s *Server) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        api.ChangelogStream(s.cfg.FSName),
		Description: "Stria changelog of file system " + s.cfg.FSName,
		Subjects:    []string{api.ChangelogSubject(s.cfg.FSName)},
		Storage:     jetstream.FileStorage,
		Duplicates:  2 * time.Minute,
	})
	return err
}

// publishOutbox publishes every durable outbox record, then deletes the
// published keys.
func (s *Server) publishOutbox(ctx context.Context, js jetstream.JetStream, from *[]byte) error {
	subject := api.ChangelogSubject(s.cfg.FSName)
	for {
		durable := s.st.durableSeq.Load()
		it, err := s.st.db.NewIter(&pebble.IterOptions{
			LowerBound: *from,
			UpperBound: changeKey(durable + 1),
		})
		if err != nil {
			return err
		}
		// Published keys are deleted one by one: range tombstones would
		// pile up in the memtable and slow every read.
		done := s.st.db.NewBatch()
		n := 0
		var perr error
		for ok := it.First(); ok && n < publishBatch; ok = it.Next() {
			seq := u64(it.Key()[1:])
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := js.Publish(pctx, subject, it.Value(), jetstream.WithMsgID(strconv.FormatUint(seq, 10)))
			cancel()
			if err != nil {
				perr = fmt.Errorf("publishing changelog record %d: %w", seq, err)
				break
			}
			done.Delete(it.Key(), nil)
			*from = changeKey(seq + 1)
			n++
		}
		if err := it.Close(); err != nil && perr == nil {
			perr = err
		}
		// Not synced: if the delete is lost the records are published again,
		// which consumers tolerate.
		if !done.Empty() {
			if err := done.Commit(pebble.NoSync); err != nil && perr == nil {
				perr = err
			}
		}
		done.Close()
		if perr != nil || n < publishBatch {
			return perr
		}
	}
}

// backoff is a capped exponential wait.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) reset() { b.cur = 0 }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.next())
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
