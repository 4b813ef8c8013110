package nats

import (
	"context"
	"errors"
	"fmt"
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
		Description:        "callhook delivery queue (created by callhook; settings are checked at every start)",
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

// setup creates the bucket's stream, or checks that the existing one has
// the settings callhook relies on. It never changes an existing stream.
func (q *Queue) setup(ctx context.Context, replicas int) error {
	want := streamConfig(q.bucket, replicas)
	s, err := q.js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if _, err := q.js.CreateStream(ctx, want); err != nil {
			return q.setupErr(want.Name, "creating", err)
		}
	case err != nil:
		return q.setupErr(want.Name, "reading", err)
	default:
		if err := checkStream(s.CachedInfo().Config, want); err != nil {
			return err
		}
	}
	q.kv, err = q.js.KeyValue(ctx, q.bucket)
	if err != nil {
		return q.setupErr(want.Name, "opening the bucket of", err)
	}
	return nil
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
