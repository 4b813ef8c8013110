package natswq

import (
	"context"
	"fmt"
	"github.com/callhook/caddy-callhook/module/queue"
	"strconv"
)

// A payload (a request body, an event's data) larger than inlineMax goes
// to blob keys b.<kind>.<id>.<n> of the same partition, written in the same
// atomic batch as its record; the record then holds no payload, so that
// outcomes (which rewrite the record) and the owner's memory never carry
// it. max_body is 1 MiB and the server's default max_payload 1 MB, so an
// event of max_body cannot be one message.

const kBlob = "b."

// inlineMax is the largest payload kept in its record; blobMax the size of
// one blob message. Both leave room under the server's max_payload for the
// record's other fields and the headers.
func (q *Queue) inlineMax() int { return min(256<<10, q.blobMax()) }

func (q *Queue) blobMax() int {
	mp := int(q.nc.MaxPayload())
	if mp <= 0 {
		mp = 1 << 20
	}
	return max(mp-(64<<10), mp/2)
}

func blobKey(kind, id string, n int) string {
	return kBlob + kind + "." + token(id) + "." + strconv.Itoa(n)
}

// splitBlob returns the blob puts for payload, or none when it stays
// inline.
func (q *Queue) splitBlob(kind, id string, payload []byte) []put {
	if len(payload) <= q.inlineMax() {
		return nil
	}
	size := q.blobMax()
	var puts []put
	for n := 0; len(payload) > 0; n++ {
		c := payload[:min(size, len(payload))]
		payload = payload[len(c):]
		puts = append(puts, put{key: blobKey(kind, id, n), val: c})
	}
	return puts
}

// readBlob reads a payload's chunks back.
func (q *Queue) readBlob(ctx context.Context, p *part, kind, id string, chunks int) ([]byte, error) {
	var out []byte
	for n := range chunks {
		e, err := p.kv.Get(ctx, blobKey(kind, id, n))
		if err != nil {
			return nil, fmt.Errorf("%s %s: reading part %d of %d of its payload: %w", kindName(kind), id, n+1, chunks, err)
		}
		out = append(out, e.Value()...)
	}
	return out, nil
}

func kindName(kind string) string {
	if kind == "e" {
		return "event"
	}
	return "delivery"
}

// recordPuts is a delivery's record and, for a large body, its blobs.
func (q *Queue) recordPuts(d *queue.Delivery, pos uint64, expect uint64) []put {
	blobs := q.splitBlob("d", d.ID, d.Request.Body)
	c := *d
	if len(blobs) > 0 {
		c.Request.Body = nil
	}
	return append([]put{{key: deliveryKey(d.ID), val: encodeRecord(&c, pos, len(blobs)), check: true, expect: expect}}, blobs...)
}
