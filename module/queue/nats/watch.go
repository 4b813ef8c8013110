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
// record written before it was called) and keeps it up to date in the
// background until wctx ends.
//
// The watch's "initial values done" marker is not enough on a cluster: the
// watch's consumer counts what is pending on whichever server it lands on,
// and a follower may not yet hold writes its leader has acknowledged. So
// the stream leader is asked first for the newest sequence of each watched
// key range, and loading ends once the watch has come that far as well.
func (q *Queue) startWatch(ctx, wctx context.Context) error {
	target, err := q.lastWatchedRevision(ctx)
	if err != nil {
		return err
	}
	w, err := q.kv.WatchFiltered(wctx, slices.Clone(watchedKeys))
	if err != nil {
		return err
	}
	for marker := false; !marker || q.watchedUpTo() < target; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				_ = w.Stop()
				return errors.New("the watch ended while loading")
			}
			if e == nil {
				marker = true
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

// lastWatchedRevision is the newest stream sequence among the watched keys,
// read from the stream leader (the stream has no direct get), 0 if none.
func (q *Queue) lastWatchedRevision(ctx context.Context) (uint64, error) {
	s, err := q.js.Stream(ctx, streamConfig(q.bucket, 1).Name)
	if err != nil {
		return 0, err
	}
	var last uint64
	for _, k := range watchedKeys {
		m, err := s.GetLastMsgForSubject(ctx, "$KV."+q.bucket+"."+k)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return 0, err
		}
		last = max(last, m.Sequence)
	}
	return last, nil
}

func (q *Queue) watchedUpTo() uint64 {
	q.m.mu.Lock()
	defer q.m.mu.Unlock()
	return q.m.watchRev
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
