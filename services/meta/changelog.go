package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stria/stria/api"
)

// A changelog message holds up to msgRecords records, or about msgBytes;
// up to inFlightMsgs messages are published before their acknowledgements
// are awaited and their records' outbox keys deleted.
const (
	msgRecords   = 1024
	msgBytes     = 256 << 10
	inFlightMsgs = 8
)

// runPublisher publishes the changelog outbox to JetStream in seq order. It
// is woken after each WAL sync that made records durable and publishes only
// records a sync has covered, so a record a crash could still lose is never
// published. Each message carries the seqs of its first and last records as
// its ID (JetStream drops duplicates in its window); after a restart the
// outbox is published from its start, so a record may appear twice but is
// never skipped.
func (s *Server) runPublisher(ctx context.Context) {
	// An acknowledgement that never comes fails its message after 10 s.
	js, err := jetstream.New(s.nc, jetstream.WithPublishAsyncTimeout(10*time.Second), jetstream.WithPublishAsyncMaxPending(2*inFlightMsgs))
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
// published keys. Records go out many to a message (the records of one WAL
// sync, typically), and several messages are in flight at once: the
// changelog cost a fifth of the CPU of metadata changes at one message and
// one acknowledgement wait per record. Each message after the first of a
// pass expects the one before it as the last in the stream, so that if one
// fails, none after it is stored before it is published again: the
// changelog stays in seq order.
func (s *Server) publishOutbox(ctx context.Context, js jetstream.JetStream, from *[]byte) error {
	subject := api.ChangelogSubject(s.cfg.FSName)
	type message struct {
		first, last uint64
		ack         jetstream.PubAckFuture
	}
	for {
		durable := s.st.durableSeq.Load()
		it, err := s.st.db.NewIter(&pebble.IterOptions{
			LowerBound: *from,
			UpperBound: changeKey(durable + 1),
		})
		if err != nil {
			return err
		}
		var (
			sent []message
			perr error
			body []byte
			n    int
			cur  message
		)
		publish := func() bool {
			opts := []jetstream.PublishOpt{jetstream.WithMsgID(api.ChangeMsgID(cur.first, cur.last))}
			if len(sent) > 0 {
				prev := sent[len(sent)-1]
				opts = append(opts, jetstream.WithExpectLastMsgID(api.ChangeMsgID(prev.first, prev.last)))
			}
			ack, err := js.PublishAsync(subject, body, opts...)
			if err != nil {
				perr = fmt.Errorf("publishing changelog records %d-%d: %w", cur.first, cur.last, err)
				return false
			}
			cur.ack = ack
			sent = append(sent, cur)
			body, n = nil, 0 // the message keeps its body until acknowledged
			return true
		}
		for ok := it.First(); ok && len(sent) < inFlightMsgs; ok = it.Next() {
			seq := u64(it.Key()[1:])
			if n == 0 {
				cur.first = seq
			}
			cur.last = seq
			body = append(append(body, it.Value()...), '\n')
			n++
			if (n >= msgRecords || len(body) >= msgBytes) && !publish() {
				break
			}
		}
		if n > 0 && perr == nil {
			publish()
		}
		full := len(sent) >= inFlightMsgs
		if err := it.Close(); err != nil && perr == nil {
			perr = err
		}
		// Published keys are deleted one by one: range tombstones would
		// pile up in the memtable and slow every read.
		done := s.st.db.NewBatch()
	acks:
		for _, m := range sent {
			select {
			case <-m.ack.Ok():
			case err := <-m.ack.Err():
				if perr == nil {
					perr = fmt.Errorf("publishing changelog records %d-%d: %w", m.first, m.last, err)
				}
				break acks
			case <-ctx.Done():
				if perr == nil {
					perr = ctx.Err()
				}
				break acks
			}
			for seq := m.first; seq <= m.last; seq++ {
				done.Delete(changeKey(seq), nil)
			}
			*from = changeKey(m.last + 1)
		}
		// Not synced: if the delete is lost the records are published again,
		// which consumers tolerate.
		if !done.Empty() {
			if err := done.Commit(pebble.NoSync); err != nil && perr == nil {
				perr = err
			}
		}
		done.Close()
		if perr != nil || !full {
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

// encodeChangeRecord is json.Marshal(r), byte for byte, without reflection:
// every namespace change writes one, and json.Marshal was a twentieth of
// an unlink's CPU. A name that is not plain printable ASCII is escaped by
// encoding/json itself.
func encodeChangeRecord(r api.ChangeRecord) []byte {
	b := make([]byte, 0, 96+len(r.Name)+len(r.NewName))
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, r.Seq, 10)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, r.Type)
	b = append(b, `,"time":`...)
	b = strconv.AppendInt(b, r.Time, 10)
	b = append(b, `,"ino":`...)
	b = strconv.AppendUint(b, r.Ino, 10)
	if r.Parent != 0 {
		b = append(b, `,"parent":`...)
		b = strconv.AppendUint(b, r.Parent, 10)
	}
	if r.Name != "" {
		b = append(b, `,"name":`...)
		b = appendJSONString(b, r.Name)
	}
	if r.NewParent != 0 {
		b = append(b, `,"new_parent":`...)
		b = strconv.AppendUint(b, r.NewParent, 10)
	}
	if r.NewName != "" {
		b = append(b, `,"new_name":`...)
		b = appendJSONString(b, r.NewName)
	}
	if r.Mode != 0 {
		b = append(b, `,"mode":`...)
		b = strconv.AppendUint(b, uint64(r.Mode), 10)
	}
	if r.Size != 0 {
		b = append(b, `,"size":`...)
		b = strconv.AppendUint(b, r.Size, 10)
	}
	return append(b, '}')
}

// appendJSONString appends s as encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			q, _ := json.Marshal(s) // a string cannot fail
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
