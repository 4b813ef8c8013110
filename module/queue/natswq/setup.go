package natswq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streamConfig is the stream under the bucket: a key-value layout (one
// message per subject, rollups, no direct delete) plus per-message TTLs for
// dedup keys and atomic batches for all-or-none writes. Reads go to the
// stream leader (no direct get), so a read after a refused write sees what
// refused it.
func streamConfig(bucket string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               "KV_" + bucket,
		Description:        "callhook delivery queue, partitioned (created by callhook; settings are checked at every start)",
		Subjects:           []string{"$KV." + bucket + ".>"},
		Retention:          jetstream.LimitsPolicy,
		MaxMsgsPerSubject:  1,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxMsgSize:         -1,
		Discard:            jetstream.DiscardNew,
		Storage:            jetstream.FileStorage,
		Replicas:           replicas,
		Duplicates:         2 * time.Minute,
		AllowRollup:        true,
		DenyDelete:         true,
		AllowDirect:        false,
		AllowMsgTTL:        true,
		AllowAtomicPublish: true,
	}
}

// setup checks for the previous backend's bucket, then creates the meta
// and partition streams, or checks that existing ones have the settings
// callhook relies on. It never changes an existing stream.
func (q *Queue) setup(ctx context.Context, partitions, replicas int) error {
	if err := q.checkOldBucket(ctx); err != nil {
		return err
	}
	var err error
	if q.meta, err = q.ensure(ctx, q.bucket+"_META", replicas); err != nil {
		return err
	}
	if err := q.checkPartitions(ctx, partitions); err != nil {
		return err
	}
	for _, p := range q.parts {
		if p.kv, err = q.ensure(ctx, p.bucket, replicas); err != nil {
			return err
		}
	}
	return nil
}

// ensure creates or checks one key-value stream and opens it.
func (q *Queue) ensure(ctx context.Context, bucket string, replicas int) (jetstream.KeyValue, error) {
	want := streamConfig(bucket, replicas)
	s, err := q.js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if _, err := q.js.CreateStream(ctx, want); err != nil {
			return nil, q.setupErr(want.Name, "creating", err)
		}
	case err != nil:
		return nil, q.setupErr(want.Name, "reading", err)
	default:
		if err := checkStream(s.CachedInfo().Config, want); err != nil {
			return nil, err
		}
	}
	kv, err := q.js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, q.setupErr(want.Name, "opening the bucket of", err)
	}
	return kv, nil
}

// checkPartitions records the partition count in the meta bucket the first
// time and refuses a node configured with another: every node must hash a
// call to the same partition.
func (q *Queue) checkPartitions(ctx context.Context, n int) error {
	_, err := q.meta.Create(ctx, "cfg.partitions", []byte(strconv.Itoa(n)))
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) && !isCASConflict(err) {
		return q.setupErr("KV_"+q.bucket+"_META", "writing the partition count to", err)
	}
	e, err := q.meta.Get(ctx, "cfg.partitions")
	if err != nil {
		return q.setupErr("KV_"+q.bucket+"_META", "reading the partition count from", err)
	}
	if have, _ := strconv.Atoi(string(e.Value())); have != n {
		return fmt.Errorf("nats queue: the queue in NATS (streams KV_%s_*) was created with %d partitions, this node is configured with %d: set `partitions %d` in the queue nats block (every node must use the same count; changing it needs a new, empty bucket)",
			q.bucket, have, n, have)
	}
	return nil
}

// checkOldBucket refuses to start beside the previous NATS backend's
// bucket (stream KV_<bucket>): work queued there would otherwise be
// silently left behind.
func (q *Queue) checkOldBucket(ctx context.Context) error {
	s, err := q.js.Stream(ctx, "KV_"+q.bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return q.setupErr("KV_"+q.bucket, "looking for the previous version's", err)
	}
	n := s.CachedInfo().State.Msgs
	if n == 0 {
		return fmt.Errorf("nats queue: found the empty bucket of the previous NATS backend (stream KV_%s); this version keeps its queue in streams KV_%s_META and KV_%s_P0... : delete the old one with `nats stream rm KV_%s` and start again",
			q.bucket, q.bucket, q.bucket, q.bucket)
	}
	return fmt.Errorf("nats queue: found the bucket of the previous NATS backend (stream KV_%s) holding %d records, which this version does not read: "+
		"drain it first with the previous callhook version (stop sending events to the nodes, let them deliver until the dashboard shows nothing pending or leased, then `nats stream rm KV_%s`), "+
		"or set `stream` to another name to start a new queue beside it and drain the old one later with the previous version",
		q.bucket, n, q.bucket)
}

func (q *Queue) setupErr(stream, doing string, err error) error {
	var api *jetstream.APIError
	// No responder to the JetStream API from a server that says it has no
	// JetStream is a server without it, not one still starting: a start
	// error, not something to wait for (OpenOrWait).
	if js, _ := q.nc.ConnectedServerJetStream(); !js && q.nc.IsConnected() && errors.Is(err, natsgo.ErrNoResponders) {
		err = fmt.Errorf("%w (%v)", jetstream.ErrJetStreamNotEnabled, err)
	}
	if errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabled ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("nats queue: JetStream is not enabled on the server (start nats-server with -js, or `jetstream: enabled` in its config): %w", err)
	}
	if strings.Contains(err.Error(), "insufficient resources") || strings.Contains(err.Error(), "replicas") {
		return fmt.Errorf("nats queue: %s stream %s: %w (replicas may be more than the JetStream cluster has servers)", doing, stream, err)
	}
	return fmt.Errorf("nats queue: %s stream %s: %w", doing, stream, err)
}

// checkStream compares the settings callhook depends on and names the
// first that differs.
func checkStream(got, want jetstream.StreamConfig) error {
	type setting struct {
		name, caddyfile string
		got, want       any
	}
	for _, s := range []setting{
		{"replicas", "replicas", got.Replicas, want.Replicas},
		{"storage", "", got.Storage, want.Storage},
		{"subjects", "", strings.Join(got.Subjects, ","), strings.Join(want.Subjects, ",")},
		{"max messages per subject (history)", "", got.MaxMsgsPerSubject, want.MaxMsgsPerSubject},
		{"retention", "", got.Retention, want.Retention},
		{"allow atomic publish", "", got.AllowAtomicPublish, want.AllowAtomicPublish},
		{"allow per-message TTL", "", got.AllowMsgTTL, want.AllowMsgTTL},
		{"allow rollup", "", got.AllowRollup, want.AllowRollup},
		{"discard policy", "", got.Discard, want.Discard},
	} {
		if fmt.Sprint(s.got) == fmt.Sprint(s.want) {
			continue
		}
		fix := fmt.Sprintf("callhook never changes an existing stream: put the setting back, or change the stream yourself (nats stream edit %s) if that is what you mean", got.Name)
		if s.caddyfile != "" {
			fix = fmt.Sprintf("set `%s %v` in the queue nats block to match it, or change the stream yourself (nats stream edit %s --%s %v); callhook never changes an existing stream",
				s.caddyfile, s.got, got.Name, s.caddyfile, s.want)
		}
		return fmt.Errorf("nats queue: stream %s has %s %v but callhook needs %v: %s", got.Name, s.name, s.got, s.want, fix)
	}
	return nil
}
