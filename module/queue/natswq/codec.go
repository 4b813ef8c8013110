package natswq

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Values are framed as: a uvarint length, that many bytes of JSON (the
// record without its payload), then the payload as raw bytes (a request
// body, an event's data). Payloads are never base64'd: an event of
// max_body takes max_body bytes, not 4/3 of it.

func frame(meta any, payload []byte) []byte {
	mb, _ := json.Marshal(meta)
	out := make([]byte, 0, binary.MaxVarintLen64+len(mb)+len(payload))
	out = binary.AppendUvarint(out, uint64(len(mb)))
	out = append(out, mb...)
	return append(out, payload...)
}

func unframe(b []byte, meta any) (payload []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return nil, errors.New("bad frame")
	}
	if err := json.Unmarshal(b[k:k+int(n)], meta); err != nil {
		return nil, err
	}
	if rest := b[k+int(n):]; len(rest) > 0 {
		payload = rest
	}
	return payload, nil
}

// record is the value of d.<id>: the delivery (without its history) and
// its place in its order key.
type record struct {
	queue.Delivery
	// Pos is the delivery's place in its order key; 0 means "the revision
	// of this very write" (set when created or put back by hand).
	Pos uint64 `json:"order_pos,omitempty"`
	// Chunks is how many blob keys hold the request body when it is too
	// large for one message (the body in the record is then empty).
	Chunks int `json:"chunks,omitempty"`
}

func encodeRecord(d *queue.Delivery, pos uint64, chunks int) []byte {
	r := record{Delivery: *d, Pos: pos, Chunks: chunks}
	r.Attempts = nil
	body := r.Request.Body
	r.Request.Body = nil
	return frame(&r, body)
}

func decodeRecord(b []byte) (*record, error) {
	r := new(record)
	body, err := unframe(b, r)
	if err != nil {
		return nil, err
	}
	r.Request.Body = body
	return r, nil
}

// eventRecord is the value of e.<id>.
type eventRecord struct {
	queue.Event
	Deliveries []string `json:"deliveries,omitempty"`
	// Chunks is how many blob keys hold Data when it is too large for one
	// message.
	Chunks int `json:"chunks,omitempty"`
}

func encodeEvent(e *eventRecord) []byte {
	c := *e
	data := c.Data
	c.Data = nil
	return frame(&c, data)
}

func decodeEvent(b []byte) (*eventRecord, error) {
	e := new(eventRecord)
	data, err := unframe(b, e)
	if err != nil {
		return nil, err
	}
	e.Data = data
	return e, nil
}

// dedupRecord is the value of x.<hash>: the answer a duplicate gets, and
// where its envelope was stored.
type dedupRecord struct {
	EventID string      `json:"event_id"`
	Refs    []queue.Ref `json:"refs"`
	Part    int         `json:"partition"`
	At      time.Time   `json:"at"`
	Until   time.Time   `json:"until"`
}

func encode(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func decodeJSON(b []byte, v any) error { return json.Unmarshal(b, v) }
