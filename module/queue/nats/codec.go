package nats

import (
	"encoding/json"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// record is the value of d.<id>: the delivery (without its history) and
// what the backend keeps about its lease and order.
type record struct {
	queue.Delivery
	// Nonce names the current lease; empty when not leased.
	Nonce string `json:"lease_nonce,omitempty"`
	// Pos is the delivery's place in its order key; 0 means "the revision
	// of this very write" (set when created or put back by hand).
	Pos uint64 `json:"order_pos,omitempty"`
}

func encodeRecord(d *queue.Delivery, nonce string, pos uint64) []byte {
	r := record{Delivery: *d, Nonce: nonce, Pos: pos}
	r.Attempts = nil
	b, _ := json.Marshal(&r)
	return b
}

func decodeRecord(b []byte) (*record, error) {
	r := new(record)
	if err := json.Unmarshal(b, r); err != nil {
		return nil, err
	}
	return r, nil
}

// eventRecord is the value of e.<id>.
type eventRecord struct {
	queue.Event
	Deliveries []string `json:"deliveries,omitempty"`
}

// dedupRecord is the value of x.<hash>: the answer a duplicate gets.
type dedupRecord struct {
	EventID string      `json:"event_id"`
	Refs    []queue.Ref `json:"refs"`
	At      time.Time   `json:"at"`
	Until   time.Time   `json:"until"`
}

func encode(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func decodeJSON(b []byte, v any) error { return json.Unmarshal(b, v) }
