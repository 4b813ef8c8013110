package callhook

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/callhook/caddy-callhook/encoders"
	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/mapping"
)

// A repeat (docs/reference.md, "Repeats") is an event with the same target,
// event and call_id and the same fields and values as one this handler block
// accepted within its dedup_window; it is answered 200 with the first
// event's IDs and queues nothing. An event of the same call with other data
// is new. `dedup <expression>` keys on the expression's value instead, and
// `dedup off` makes every event new.
const (
	defaultDedupWindow = 24 * time.Hour
	// maxDedupWindow bounds dedup_window: dedup keys are pruned after it.
	maxDedupWindow = 7 * 24 * time.Hour
	// dedupOff is the Dedup value that turns repeat detection off.
	dedupOff = "off"
)

// compileDedup compiles the handler's `dedup` setting: "" (by content),
// "off", or an expression whose value replaces the content as the key.
func compileDedup(src string) (*mapping.Program, error) {
	if src == "" || src == dedupOff {
		return nil, nil
	}
	prog, err := mapping.Compile(src, mapping.Value)
	if err != nil {
		return nil, fmt.Errorf("dedup: %v", err)
	}
	return prog, nil
}

// dedupKey is the key under which an event counts as a repeat; "" means
// the event is never a repeat (dedup off, or a dedup expression that
// yields nil). The key has a fixed length whatever the event holds, so a
// long call_id or a large body can never make the queue refuse it.
//
// By default the key covers the call_id, the canonical fields and the
// whole decoded body: a second call_forwarding of one call to another
// number, or a corrected after_call, is a new event.
func (h *Handler) dedupKey(ev *intake.Event) (string, error) {
	if h.Dedup == dedupOff {
		return "", nil
	}
	sum := sha256.New()
	if h.dedupProg != nil {
		v, err := h.dedupProg.Run(h.env(ev))
		if err != nil {
			return "", fmt.Errorf("dedup: %v", err)
		}
		v = mapping.Normalize(v)
		if v == nil {
			return "", nil
		}
		var b bytes.Buffer
		if err := encoders.WriteJSON(&b, v); err != nil {
			return "", fmt.Errorf("dedup: the value cannot be hashed: %v", err)
		}
		sum.Write([]byte("expr\x00"))
		sum.Write(b.Bytes())
	} else {
		// json.Marshal writes map keys sorted and struct fields in order,
		// so equal events give equal bytes.
		call, err := json.Marshal(ev.Call)
		if err != nil {
			return "", fmt.Errorf("dedup: %v", err)
		}
		// Canonical fields count by their coerced value (duration "5" in a
		// form and 5 in JSON are the same); the rest of the body as sent.
		rest := make(map[string]any, len(ev.Data))
		for k, v := range ev.Data {
			if !intake.IsField(k) {
				rest[k] = v
			}
		}
		// (sorted keys, as json.Marshal writes them, without its reflection)
		var data bytes.Buffer
		if err := encoders.WriteJSON(&data, rest); err != nil {
			return "", fmt.Errorf("dedup: %v", err)
		}
		sum.Write([]byte("content\x00"))
		sum.Write([]byte(ev.CallID))
		sum.Write([]byte{0})
		sum.Write(call)
		sum.Write([]byte{0})
		sum.Write(data.Bytes())
	}
	// target and event stay readable; the rest is the digest.
	return hashIfLong(h.Target) + "\x00" + ev.Name + "\x00" + hex.EncodeToString(sum.Sum(nil)), nil
}

func hashIfLong(s string) string {
	if len(s) <= 128 {
		return s
	}
	d := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(d[:])
}

// env is what handler-level expressions (dedup, reply) see of an event.
func (h *Handler) env(ev *intake.Event) *mapping.Env {
	return &mapping.Env{Call: ev.Call, Data: ev.Data, Event: ev.Name, Target: h.Target, Request: &ev.Request}
}

// dedupWindow is the handler's window, default 24h.
func (h *Handler) dedupWindow() time.Duration {
	if h.DedupWindow > 0 {
		return time.Duration(h.DedupWindow)
	}
	return defaultDedupWindow
}
