package natswq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// part is one partition stream. Every node knows every partition's names;
// only the owner has a mirror of it.
type part struct {
	i      int
	bucket string // <bucket>_P<i>
	prefix string // "$KV.<bucket>_P<i>."
	kv     jetstream.KeyValue

	mu      sync.Mutex
	m       *mirror // nil unless this node owns the partition
	lockRev uint64  // revision of our lock o.<i>
	stopW   context.CancelFunc
	sub     *natsgo.Subscription // answers other nodes' operator requests
	wg      sync.WaitGroup
}

func partBucket(bucket string, i int) string { return fmt.Sprintf("%s_P%d", bucket, i) }

// mirror returns the partition's mirror when this node owns it, else nil.
func (p *part) mirror() *mirror {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m
}

func (p *part) owned() bool { return p.mirror() != nil }

var watchedKeys = []string{kDelivery + ">", kEvent + ">"}

// load reads the partition into a new mirror (it returns once the watch has
// delivered every record written before it was called) and keeps it up to
// date in the background until the partition is dropped.
//
// The watch's "initial values done" marker is not enough on a cluster: the
// watch's consumer counts what is pending on whichever server it lands on,
// and a follower may not yet hold writes its leader has acknowledged. So
// the stream leader is asked first for the newest sequence of the watched
// keys, and loading ends once the watch has come that far as well.
func (q *Queue) load(ctx context.Context, p *part, lockRev uint64) error {
	m := newMirror(q.pz, q.wake)
	target, err := q.lastWatchedRevision(ctx, p)
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(context.Background())
	w, err := p.kv.WatchFiltered(wctx, slices.Clone(watchedKeys))
	if err != nil {
		stop()
		return err
	}
	for marker := false; !marker || m.watchedUpTo() < target; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				_ = w.Stop()
				stop()
				return errors.New("the watch ended while loading")
			}
			if e == nil {
				marker = true
				continue
			}
			m.applyEntry(e)
		case <-ctx.Done():
			_ = w.Stop()
			stop()
			return ctx.Err()
		}
	}
	sub, err := q.serve(p, m)
	if err != nil {
		_ = w.Stop()
		stop()
		return err
	}
	p.mu.Lock()
	p.m, p.lockRev, p.stopW, p.sub = m, lockRev, stop, sub
	p.wg.Add(1)
	p.mu.Unlock()
	go q.watch(wctx, p, m, w)
	q.wake.signal()
	return nil
}

// drop forgets the partition: its watch stops and its mirror (with the
// leases this node held in it) is gone.
func (p *part) drop() {
	p.mu.Lock()
	stop, sub := p.stopW, p.sub
	p.m, p.stopW, p.lockRev, p.sub = nil, nil, 0, nil
	p.mu.Unlock()
	if sub != nil {
		_ = sub.Unsubscribe()
	}
	if stop != nil {
		stop()
	}
	p.wg.Wait()
}

// lastWatchedRevision is the newest stream sequence among the watched keys,
// read from the stream leader (the stream has no direct get), 0 if none.
func (q *Queue) lastWatchedRevision(ctx context.Context, p *part) (uint64, error) {
	s, err := q.js.Stream(ctx, "KV_"+p.bucket)
	if err != nil {
		return 0, err
	}
	var last uint64
	for _, k := range watchedKeys {
		m, err := s.GetLastMsgForSubject(ctx, p.prefix+k)
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

// watch applies changes until wctx ends. The client's watch survives
// reconnects by itself; if it ever ends, a new one resumes after the last
// revision seen.
func (q *Queue) watch(wctx context.Context, p *part, m *mirror, w jetstream.KeyWatcher) {
	defer p.wg.Done()
	for {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			if h := q.testBeforeApply; h != nil {
				h(p.i)
			}
			m.applyEntry(e)
		}
		_ = w.Stop()
		for {
			if wctx.Err() != nil {
				return
			}
			from := m.watchedUpTo() + 1
			var err error
			w, err = p.kv.WatchFiltered(wctx, slices.Clone(watchedKeys), jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from))
			if err == nil {
				q.logger.Info("nats queue: watch resumed", zap.Int("partition", p.i), zap.Uint64("from_revision", from))
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

// waitApplied waits until m has applied revision rev (the owner's view
// includes a write it just made), at most until ctx ends or a few seconds
// pass: the write is stored either way, and will be leased once the watch
// brings it.
func (m *mirror) waitApplied(ctx context.Context, rev uint64) {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		ch := m.n.wait()
		if m.watchedUpTo() >= rev {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (m *mirror) watchedUpTo() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.watchRev
}

func (m *mirror) applyEntry(e jetstream.KeyValueEntry) {
	deleted := e.Operation() != jetstream.KeyValuePut
	m.mu.Lock()
	m.apply(e.Key(), e.Revision(), e.Value(), deleted)
	m.watched(e.Revision())
	m.mu.Unlock()
	m.n.signal()
}
