package natswq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/callhook/caddy-callhook/module/queue"
)

// Operator views of partitions another node owns are answered by that
// node: it alone has their indexes. The owner of partition i answers
// requests on rpcSubject(i) while it owns it; a partition between owners
// (at most a few seconds) is left out of the answer.

func (q *Queue) rpcSubject(i int) string { return fmt.Sprintf("_CALLHOOK.%s.p%d", q.bucket, i) }

// rpcReq asks an owner for a page of List or its dead deliveries.
type rpcReq struct {
	Op     string       `json:"op"` // "list" or "dead"
	Filter queue.Filter `json:"filter,omitzero"`
	Cur    *listPosJSON `json:"cur,omitempty"`
	Limit  int          `json:"limit,omitempty"`
}

type listPosJSON struct {
	Created int64  `json:"c"`
	ID      string `json:"id"`
}

type rpcRec struct {
	D      queue.Delivery `json:"d"`
	Rev    uint64         `json:"rev"`
	Pos    uint64         `json:"pos"`
	Chunks int            `json:"chunks,omitempty"`
}

type rpcResp struct {
	Recs  []rpcRec     `json:"recs"`
	Stop  *listPosJSON `json:"stop,omitempty"`
	Error string       `json:"error,omitempty"`
}

// serve answers requests for partition p from its mirror m until the
// subscription ends (the partition is dropped).
func (q *Queue) serve(p *part, m *mirror) (*natsgo.Subscription, error) {
	return q.nc.Subscribe(q.rpcSubject(p.i), func(msg *natsgo.Msg) {
		var req rpcReq
		var resp rpcResp
		if err := json.Unmarshal(msg.Data, &req); err != nil {
			resp.Error = err.Error()
		} else {
			switch req.Op {
			case "list":
				var cur *listPos
				if req.Cur != nil {
					cur = &listPos{req.Cur.Created, req.Cur.ID}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				rs, stop, err := m.list(ctx, req.Filter, cur, req.Limit)
				cancel()
				if err != nil {
					resp.Error = err.Error()
				}
				for _, r := range rs {
					resp.Recs = append(resp.Recs, rpcRec{D: r.d, Rev: r.rev, Pos: r.pos, Chunks: r.chunks})
				}
				if stop != nil {
					resp.Stop = &listPosJSON{stop.created, stop.id}
				}
			case "dead":
				m.mu.Lock()
				for _, r := range m.byState[queue.Dead].s {
					resp.Recs = append(resp.Recs, rpcRec{D: r.d, Rev: r.rev, Pos: r.pos, Chunks: r.chunks})
				}
				m.mu.Unlock()
			default:
				resp.Error = "unknown op " + req.Op
			}
		}
		b, _ := json.Marshal(&resp)
		if len(b) > int(q.nc.MaxPayload()) {
			b, _ = json.Marshal(&rpcResp{Error: "answer over max_payload: ask for a smaller page"})
		}
		_ = msg.Respond(b)
	})
}

// ask sends req to the owner of partition i. A partition without an owner
// right now answers nothing (nil, nil).
func (q *Queue) ask(ctx context.Context, i int, req rpcReq) (*rpcResp, error) {
	b, _ := json.Marshal(&req)
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := q.nc.RequestWithContext(octx, q.rpcSubject(i), b)
	if errors.Is(err, natsgo.ErrNoResponders) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var resp rpcResp
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("partition %d's owner: %s", i, resp.Error)
	}
	return &resp, nil
}
