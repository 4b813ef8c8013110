package embedded

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/callhook/caddy-callhook/module/queue"
)

const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

// Get returns the delivery with id, or an error wrapping queue.ErrNotFound.
func (q *Queue) Get(ctx context.Context, id string) (*queue.Delivery, error) {
	var d *queue.Delivery
	err := q.read(ctx, func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketDeliveries).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("delivery %q: %w", id, queue.ErrNotFound)
		}
		var err error
		if d, err = decode(id, v); err != nil {
			return err
		}
		withLease(tx.Bucket(bucketLeased), d)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// NextDue is the first key of the due index: the earliest NextAttempt of a
// pending delivery, which for a leased one is when its lease ends.
func (q *Queue) NextDue(ctx context.Context) (time.Time, bool, error) {
	var (
		t  time.Time
		ok bool
	)
	err := q.read(ctx, func(tx *bbolt.Tx) error {
		if k, _ := tx.Bucket(bucketDue).Cursor().First(); k != nil {
			t, ok = keyTime(k), true
		}
		return nil
	})
	return t, ok, err
}

// Stats reads the counters kept in meta. Pending and Leased are disjoint:
// Pending counts pending deliveries without a lease, Leased those with one
// (including leases that expired and were not taken again yet).
func (q *Queue) Stats(ctx context.Context) (queue.Stats, error) {
	var s queue.Stats
	err := q.read(ctx, func(tx *bbolt.Tx) error {
		c := readCounts(tx.Bucket(bucketMeta))
		s = queue.Stats{
			Pending:   int(c.pending),
			Leased:    int(c.leased),
			Delivered: int(c.delivered),
			Dead:      int(c.dead),
		}
		return nil
	})
	return s, err
}

// listFields are the fields List filters on, decoded before the whole record
// so that non-matching records cost less.
type listFields struct {
	Webhook string `json:"webhook"`
	Event   string `json:"event"`
	CallID  string `json:"call_id"`
	Target  string `json:"target"`
}

// List walks the state indexes (created_at + id) newest first; with no state
// filter it merges the three. The cursor is the last key returned. Other
// filters decode each record, so they scan. The cursor of a full page is
// returned whenever more keys remain, so the last page of a filtered list
// may be empty.
func (q *Queue) List(ctx context.Context, f queue.Filter) ([]*queue.Delivery, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	if limit > maxListLimit {
		limit = maxListLimit
	}
	var after []byte
	if f.Cursor != "" {
		var err error
		after, err = base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || len(after) < 8 {
			return nil, "", fmt.Errorf("invalid list cursor %q; pass the cursor of the previous page unchanged or none", f.Cursor)
		}
	}
	var names [][]byte
	switch f.State {
	case "":
		names = [][]byte{bucketPending, bucketDelivered, bucketDead}
	case queue.Pending:
		names = [][]byte{bucketPending}
	case queue.Delivered:
		names = [][]byte{bucketDelivered}
	case queue.Dead:
		names = [][]byte{bucketDead}
	default:
		return nil, "", fmt.Errorf("unknown delivery state %q; use pending, delivered or dead", f.State)
	}
	filtered := f.Webhook != "" || f.Event != "" || f.CallID != "" || f.Target != ""

	var (
		out  []*queue.Delivery
		next string
	)
	err := q.read(ctx, func(tx *bbolt.Tx) error {
		type head struct {
			c *bbolt.Cursor
			k []byte
		}
		heads := make([]head, len(names))
		for i, name := range names {
			c := tx.Bucket(name).Cursor()
			var k []byte
			if after == nil {
				k, _ = c.Last()
			} else if k, _ = c.Seek(after); k == nil {
				k, _ = c.Last()
			} else {
				k, _ = c.Prev()
			}
			// Seek lands on the first key >= after; only keys < after are
			// on this page.
			for k != nil && after != nil && bytes.Compare(k, after) >= 0 {
				k, _ = c.Prev()
			}
			heads[i] = head{c, k}
		}
		deliveries := tx.Bucket(bucketDeliveries)
		leased := tx.Bucket(bucketLeased)
		var last []byte
		for len(out) < limit {
			best := -1
			for i, h := range heads {
				if h.k != nil && (best < 0 || bytes.Compare(h.k, heads[best].k) > 0) {
					best = i
				}
			}
			if best < 0 {
				break
			}
			key := heads[best].k
			heads[best].k, _ = heads[best].c.Prev()

			id := string(key[8:])
			v := deliveries.Get(key[8:])
			if v == nil {
				continue
			}
			if filtered {
				var lf listFields
				if err := json.Unmarshal(v, &lf); err != nil {
					return fmt.Errorf("queue record %q is corrupt: %w", id, err)
				}
				if (f.Webhook != "" && lf.Webhook != f.Webhook) ||
					(f.Event != "" && lf.Event != f.Event) ||
					(f.CallID != "" && lf.CallID != f.CallID) ||
					(f.Target != "" && lf.Target != f.Target) {
					continue
				}
			}
			d, err := decode(id, v)
			if err != nil {
				return err
			}
			withLease(leased, d)
			out = append(out, d)
			last = key
		}
		if len(out) == limit {
			for _, h := range heads {
				if h.k != nil {
					next = base64.RawURLEncoding.EncodeToString(last)
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return out, next, nil
}
