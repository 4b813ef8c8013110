package embedded

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"github.com/callhook/caddy-callhook/module/queue"
)

// List returns deliveries matching f, newest first (see queue.Store).
//
// A cursor is the List-order position of the last delivery looked at
// (X a created seq), the same whatever index a filter walks.
func (q *Queue) List(ctx context.Context, f queue.Filter) (queue.Page, error) {
	if err := ctx.Err(); err != nil {
		return queue.Page{}, err
	}
	if f.State != "" && !f.State.Valid() {
		return queue.Page{}, fmt.Errorf("unknown state %q: use pending, leased, delivered or dead", f.State)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	limit = min(limit, maxListLimit)
	var pos []byte
	if f.Cursor != "" {
		c, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || len(c) != len(allPrefix)+16 || !bytes.HasPrefix(c, allPrefix) {
			return queue.Page{}, errors.New("the cursor is not one this queue handed out; start again without it")
		}
		pos = c[len(allPrefix):]
	}
	if f.State == queue.Leased {
		return q.listLeased(ctx, f, limit, pos)
	}
	var page queue.Page
	err := q.reading(func() error {
		pfxs, err := q.listRanges(f)
		if err != nil {
			return err
		}
		page, err = q.listMerged(ctx, f, limit, pfxs, pos)
		return err
	})
	return page, err
}

// listRanges picks the index ranges that hold every delivery f can match,
// the narrowest the indexes allow.
func (q *Queue) listRanges(f queue.Filter) ([][]byte, error) {
	one := func(p []byte) ([][]byte, error) { return [][]byte{p}, nil }
	split := func(p []byte) ([][]byte, error) {
		subs, ok, err := subranges(q.db, p)
		if err != nil || ok {
			return subs, err
		}
		return one(allPrefix)
	}
	switch {
	case f.EventID != "":
		return one(indexPrefix(ixEvent, f.EventID))
	case f.CallID != "":
		return one(indexPrefix(ixCall, f.CallID))
	case f.Target != "" && f.Webhook != "":
		return one(indexPrefix(ixHook, f.Target, f.Webhook))
	case f.Target != "":
		return split(indexPrefix(ixHook, f.Target))
	case stateIndexed(f.State):
		return one(statePrefix(f.State))
	case f.Webhook != "":
		targets, ok, err := subranges(q.db, indexPrefix(ixHook))
		if err != nil {
			return nil, err
		}
		if !ok {
			return one(allPrefix)
		}
		for i, t := range targets {
			targets[i] = appendStr(t, f.Webhook)
		}
		return targets, nil
	}
	return one(allPrefix)
}

// listMerged walks the ranges pfxs newest first from before pos, as one
// merged range, and returns the deliveries that match f. It stops at limit
// hits or listScanBudget keys; a page that stops before every range ended
// carries a cursor.
func (q *Queue) listMerged(ctx context.Context, f queue.Filter, limit int, pfxs [][]byte, pos []byte) (queue.Page, error) {
	type walk struct {
		it  *pebble.Iterator
		pfx int
		ok  bool
	}
	walks := make([]walk, 0, len(pfxs))
	defer func() {
		for _, w := range walks {
			w.it.Close()
		}
	}()
	for _, p := range pfxs {
		upper := prefixEnd(p)
		if pos != nil {
			upper = append(append([]byte(nil), p...), pos...)
		}
		it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: upper})
		if err != nil {
			return queue.Page{}, err
		}
		walks = append(walks, walk{it: it, pfx: len(p), ok: it.Last()})
	}
	var page queue.Page
	examined := 0
	var last []byte
	for {
		// The walk whose current key is the newest.
		best := -1
		for i := range walks {
			w := &walks[i]
			if w.ok && (best < 0 || bytes.Compare(w.it.Key()[w.pfx:], walks[best].it.Key()[walks[best].pfx:]) > 0) {
				best = i
			}
		}
		if best < 0 {
			break // every range ended
		}
		if len(page.Deliveries) == limit || examined >= listScanBudget {
			page.Next = base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), allPrefix...), last...))
			break
		}
		w := &walks[best]
		examined++
		if examined%256 == 0 {
			if err := ctx.Err(); err != nil {
				return queue.Page{}, err
			}
		}
		last = append(last[:0], w.it.Key()[w.pfx:]...)
		id := string(w.it.Value())
		w.ok = w.it.Prev()
		d, err := q.load(id, false)
		if errors.Is(err, queue.ErrNotFound) {
			continue
		}
		if err != nil {
			return queue.Page{}, err
		}
		if matches(d, f) {
			page.Deliveries = append(page.Deliveries, d)
		}
	}
	for _, w := range walks {
		if err := w.it.Error(); err != nil {
			return queue.Page{}, err
		}
	}
	return page, nil
}

func matches(d *queue.Delivery, f queue.Filter) bool {
	return (f.State == "" || d.State == f.State) &&
		(f.Webhook == "" || d.Webhook == f.Webhook) &&
		(f.Event == "" || d.Event == f.Event) &&
		(f.CallID == "" || d.CallID == f.CallID) &&
		(f.Target == "" || d.Target == f.Target) &&
		(f.EventID == "" || d.EventID == f.EventID)
}

// listLeased lists the in-memory leases (at most as many as workers hold).
func (q *Queue) listLeased(ctx context.Context, f queue.Filter, limit int, pos []byte) (queue.Page, error) {
	var page queue.Page
	err := q.reading(func() error {
		type item struct {
			pos []byte
			id  string
		}
		q.sched.mu.Lock()
		items := make([]item, 0, len(q.sched.leases))
		for id, lr := range q.sched.leases {
			items = append(items, item{position(lr.st.created, lr.m.seq), id})
		}
		q.sched.mu.Unlock()
		sort.Slice(items, func(i, j int) bool { return bytes.Compare(items[i].pos, items[j].pos) > 0 })
		var last []byte
		for _, it := range items {
			if err := ctx.Err(); err != nil {
				return err
			}
			if pos != nil && bytes.Compare(it.pos, pos) >= 0 {
				continue
			}
			d, err := q.load(it.id, false)
			if errors.Is(err, queue.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if !matches(d, f) {
				continue
			}
			if len(page.Deliveries) == limit {
				page.Next = base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), allPrefix...), last...))
				break
			}
			page.Deliveries = append(page.Deliveries, d)
			last = it.pos
		}
		return nil
	})
	return page, err
}
