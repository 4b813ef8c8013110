package nats

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

var watchedKeys = []string{kDelivery + ">", kEvent + ">", kPause + ">"}

// startWatch loads the mirror (it returns once the watch has delivered every
// current record) and keeps it up to date in the background until wctx ends.
func (q *Queue) startWatch(ctx, wctx context.Context) error {
	w, err := q.kv.WatchFiltered(wctx, slices.Clone(watchedKeys))
	if err != nil {
		return err
	}
	for loaded := false; !loaded; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				_ = w.Stop()
				return errors.New("the watch ended while loading")
			}
			if e == nil {
				loaded = true
				continue
			}
			q.applyEntry(e)
		case <-ctx.Done():
			_ = w.Stop()
			return ctx.Err()
		}
	}
	q.watchWG.Add(1)
	go q.watch(wctx, w)
	return nil
}

func (q *Queue) applyEntry(e jetstream.KeyValueEntry) {
	deleted := e.Operation() != jetstream.KeyValuePut
	q.m.mu.Lock()
	q.m.apply(e.Key(), e.Revision(), e.Value(), deleted)
	q.m.watched(e.Revision())
	q.m.mu.Unlock()
}

// watch applies changes until wctx ends. The client's watch survives
// reconnects by itself; if it ever ends, a new one resumes after the last
// revision seen.
func (q *Queue) watch(wctx context.Context, w jetstream.KeyWatcher) {
	defer q.watchWG.Done()
	for {
		for e := range w.Updates() {
			if e != nil {
				q.applyEntry(e)
			}
		}
		_ = w.Stop()
		for {
			if wctx.Err() != nil {
				return
			}
			q.m.mu.Lock()
			from := q.m.watchRev + 1
			q.m.mu.Unlock()
			var err error
			w, err = q.kv.WatchFiltered(wctx, slices.Clone(watchedKeys), jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from))
			if err == nil {
				q.logger.Info("nats queue: watch resumed", zap.Uint64("from_revision", from))
				break
			}
			select {
			case <-wctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}
