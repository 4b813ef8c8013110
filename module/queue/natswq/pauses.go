package natswq

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/callhook/caddy-callhook/module/queue"
)

// pauseSet is every node's copy of the pauses stored in the meta bucket
// (a few records, not the queue), fed by a watch.
type pauseSet struct {
	mu     sync.RWMutex
	byKey  map[string]pauseEntry // by meta key
	paused map[string]int        // webhook key -> stored pauses
	rev    uint64
}

type pauseEntry struct {
	rev uint64
	p   queue.Pause
}

func newPauseSet() *pauseSet {
	return &pauseSet{byKey: map[string]pauseEntry{}, paused: map[string]int{}}
}

func (s *pauseSet) has(hook string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.paused[hook] > 0
}

func (s *pauseSet) list() []queue.Pause {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]queue.Pause, 0, len(s.byKey))
	for _, e := range s.byKey {
		out = append(out, e.p)
	}
	return out
}

func (s *pauseSet) apply(key string, rev uint64, val []byte, deleted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev = max(s.rev, rev)
	old, had := s.byKey[key]
	if had && rev <= old.rev {
		return
	}
	if had {
		hk := queue.WebhookKey(old.p.Target, old.p.Webhook)
		if s.paused[hk]--; s.paused[hk] <= 0 {
			delete(s.paused, hk)
		}
		delete(s.byKey, key)
	}
	if deleted {
		return
	}
	var p queue.Pause
	if json.Unmarshal(val, &p) != nil {
		return
	}
	s.byKey[key] = pauseEntry{rev: rev, p: p}
	s.paused[queue.WebhookKey(p.Target, p.Webhook)]++
}

// watchPauses loads the pauses (returning once they are all in) and keeps
// them current until bctx ends.
func (q *Queue) watchPauses(ctx, bctx context.Context) error {
	w, err := q.meta.Watch(bctx, kPause+">")
	if err != nil {
		return err
	}
	for loaded := false; !loaded; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the pause watch ended while loading")
			}
			if e == nil {
				loaded = true
				continue
			}
			q.pz.apply(e.Key(), e.Revision(), e.Value(), e.Operation() != jetstream.KeyValuePut)
		case <-ctx.Done():
			_ = w.Stop()
			return ctx.Err()
		}
	}
	q.bg.Add(1)
	go func() {
		defer q.bg.Done()
		for {
			for e := range w.Updates() {
				if e != nil {
					q.pz.apply(e.Key(), e.Revision(), e.Value(), e.Operation() != jetstream.KeyValuePut)
					q.wake.signal()
				}
			}
			_ = w.Stop()
			for {
				if bctx.Err() != nil {
					return
				}
				q.pz.mu.RLock()
				from := q.pz.rev + 1
				q.pz.mu.RUnlock()
				var err error
				w, err = q.meta.Watch(bctx, kPause+">", jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from))
				if err == nil {
					q.logger.Info("nats queue: pause watch resumed", zap.Uint64("from_revision", from))
					break
				}
				select {
				case <-bctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
	}()
	return nil
}
