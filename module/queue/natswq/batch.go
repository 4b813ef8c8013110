package natswq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/callhook/caddy-callhook/module/queue"
)

// put is one message of a write: a key, its value, and the revision the
// key must have now (0: must not exist; expectAny: no check).
type put struct {
	key    string
	val    []byte
	expect uint64
	check  bool
	ttl    time.Duration
	del    bool // a delete marker instead of a value
}

func (q *Queue) msg(pfx string, p put) *natsgo.Msg {
	m := natsgo.NewMsg(pfx + p.key)
	m.Data = p.val
	if p.check {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(p.expect, 10))
	}
	if p.ttl > 0 {
		m.Header.Set("Nats-TTL", strconv.FormatInt(int64((p.ttl+time.Second-1)/time.Second), 10))
	}
	if p.del {
		m.Header.Set("KV-Operation", "DEL")
	}
	return m
}

// batchAck is the server's answer to an atomic batch's commit.
type batchAck struct {
	Error  *jetstream.APIError `json:"error,omitempty"`
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  int                 `json:"count"`
}

// errBatchBusy is the server refusing a batch because too many are open.
var errBatchBusy = errors.New("too many atomic batches in flight")

// errBatchIncomplete is the server refusing a batch that reached it with a
// gap (a message lost on the way, or the batch timed out while staged):
// nothing of it was stored, and the same batch sent again can succeed.
var errBatchIncomplete = errors.New("the server got the atomic batch incomplete; nothing of it was stored")

// batch writes puts as one atomic batch (JetStream 2.12+): the server stores
// all of them or none, and checks every expected revision against its state
// before the batch. It returns the revision of each put. A batch cut off
// before its commit (connection lost, timeout) is dropped by the server.
func (q *Queue) batch(ctx context.Context, pfx string, puts []put) ([]uint64, error) {
	if len(puts) == 1 {
		rev, err := q.write(ctx, pfx, puts[0])
		return []uint64{rev}, err
	}
	if len(puts) > maxBatch {
		return nil, fmt.Errorf("%d records in one envelope is over the %d an atomic batch may hold", len(puts), maxBatch)
	}
	select {
	case q.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-q.done:
		return nil, queue.ErrClosed
	}
	defer func() { <-q.slots }()
	for try, incomplete := 0, 0; ; try++ {
		revs, err := q.batchOnce(ctx, pfx, puts)
		if errors.Is(err, errBatchIncomplete) {
			if incomplete++; incomplete < 3 {
				continue
			}
		}
		if !errors.Is(err, errBatchBusy) || try >= 20 {
			return revs, err
		}
		select {
		case <-time.After(time.Duration(5+try*5) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (q *Queue) batchOnce(ctx context.Context, pfx string, puts []put) ([]uint64, error) {
	id := nuid.Next()
	for i, p := range puts {
		m := q.msg(pfx, p)
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < len(puts)-1 {
			if err := q.nc.PublishMsg(m); err != nil {
				return nil, err
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		resp, err := q.nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			return nil, err
		}
		var ack batchAck
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return nil, fmt.Errorf("unreadable answer to an atomic batch: %v", err)
		}
		if ack.Error != nil {
			return nil, batchAckError(ack.Error)
		}
		if ack.Count != len(puts) || ack.Seq < uint64(len(puts)) {
			return nil, fmt.Errorf("atomic batch stored %d of %d messages (seq %d)", ack.Count, len(puts), ack.Seq)
		}
		revs := make([]uint64, len(puts))
		first := ack.Seq - uint64(len(puts)) + 1
		for j := range revs {
			revs[j] = first + uint64(j)
		}
		return revs, nil
	}
	return nil, nil
}

// batchAckError turns the server's refusal of a batch into what batch
// retries (busy, incomplete) or returns (the APIError, a CAS conflict
// among them).
func batchAckError(e *jetstream.APIError) error {
	switch e.ErrorCode {
	case 10210, 10211: // atomic / batch publish too many inflight
		return errBatchBusy
	case 10175, 10176: // atomic publish sequence missing, batch incomplete
		return fmt.Errorf("%w (%v)", errBatchIncomplete, e)
	}
	return e
}

// write stores one put and returns its revision.
func (q *Queue) write(ctx context.Context, pfx string, p put) (uint64, error) {
	ack, err := q.js.PublishMsg(ctx, q.msg(pfx, p))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// writeAll stores puts independently, pipelined, and returns each one's
// revision or error.
func (q *Queue) writeAll(ctx context.Context, pfx string, puts []put) ([]uint64, []error) {
	revs := make([]uint64, len(puts))
	errs := make([]error, len(puts))
	futs := make([]jetstream.PubAckFuture, len(puts))
	for i, p := range puts {
		futs[i], errs[i] = q.js.PublishMsgAsync(q.msg(pfx, p))
	}
	for i, f := range futs {
		if f == nil {
			continue
		}
		select {
		case a := <-f.Ok():
			revs[i] = a.Sequence
		case err := <-f.Err():
			errs[i] = err
		case <-ctx.Done():
			errs[i] = ctx.Err()
		}
	}
	return revs, errs
}
