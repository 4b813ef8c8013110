package embedded

import (
	"encoding/binary"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/callhook/caddy-callhook/module/queue"
)

// The List indexes (format version 3). Every index key ends in the
// delivery's position in List order, created(8) seq(8), and holds its ID.
// A delivery has four keys whatever becomes of it, and a fifth only while
// it is pending or dead:
//
//	X a created seq                  every delivery: no filter, event name, delivered
//	X h target webhook created seq   target, and target + webhook (webhook alone:
//	                                 one sub-range per target, merged)
//	X c callID created seq           call_id
//	X v eventID created seq          event_id (and the prune: is an event done)
//	X s state created seq            pending (Stats' oldest pending) and dead
//
// Version 2 had seven keys per delivery (one per filter and one per state,
// delivered included). A delivered delivery, the common case, now writes
// four index keys at enqueue and deletes one at its outcome; a dead one
// writes one more, so it can be listed and retried.
// Filters with no index of their own (event name, delivered, webhook
// alone) check the records of the range they walk; listScanBudget bounds
// that walk and the page comes back short with a cursor.

// stateIndexed reports whether deliveries in state s have a state-index
// key: the states an operator lists to act on, and the one Stats reads.
func stateIndexed(s queue.State) bool { return s == queue.Pending || s == queue.Dead }

var allPrefix = []byte{pIndex, ixAll}

func statePrefix(s queue.State) []byte { return indexPrefix(ixState, string(stateByte(s))) }

// position is the List-order tail of an index key.
func position(created time.Time, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendTime(make([]byte, 0, 16), created), seq)
}

// writeIndexes writes the List index keys of a new delivery.
func writeIndexes(w *wtx, id string, st static, seq uint64, state queue.State) {
	v := []byte(id)
	w.set(indexKey(allPrefix, st.created, seq), v)
	w.set(indexKey(indexPrefix(ixHook, st.target, st.webhook), st.created, seq), v)
	w.set(indexKey(indexPrefix(ixCall, st.callID), st.created, seq), v)
	w.set(indexKey(indexPrefix(ixEvent, st.eventID), st.created, seq), v)
	if stateIndexed(state) {
		k := indexKey(statePrefix(state), st.created, seq)
		w.set(k, v)
		if state == queue.Pending {
			w.fx(effect{kind: fxPendingIndex, key: k})
		}
	}
	w.countTarget(st.target, state, 1)
}

func deleteIndexes(w *wtx, st static, seq uint64, state queue.State) {
	w.del(indexKey(allPrefix, st.created, seq))
	w.del(indexKey(indexPrefix(ixHook, st.target, st.webhook), st.created, seq))
	w.del(indexKey(indexPrefix(ixCall, st.callID), st.created, seq))
	w.del(indexKey(indexPrefix(ixEvent, st.eventID), st.created, seq))
	if stateIndexed(state) {
		w.del(indexKey(statePrefix(state), st.created, seq))
	}
	w.countTarget(st.target, state, -1)
}

// moveState moves a delivery's state-index key.
func moveState(w *wtx, id string, st static, seq uint64, from, to queue.State) {
	if stateIndexed(from) {
		w.del(indexKey(statePrefix(from), st.created, seq))
	}
	if stateIndexed(to) {
		k := indexKey(statePrefix(to), st.created, seq)
		w.set(k, []byte(id))
		if to == queue.Pending {
			w.fx(effect{kind: fxPendingIndex, key: k})
		}
	}
	w.countTarget(st.target, from, -1)
	w.countTarget(st.target, to, 1)
}

// maxSubranges bounds the sub-ranges one List merges (webhooks of a
// target, targets of a webhook); past it the list walks
// the all-index instead.
const maxSubranges = 256

// subranges returns pfx extended by each distinct length-prefixed value
// that follows it in the store, one seek per value; nil and false when
// there are more than maxSubranges.
func subranges(r pebble.Reader, pfx []byte) ([][]byte, bool, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: pfx, UpperBound: prefixEnd(pfx)})
	if err != nil {
		return nil, false, err
	}
	var out [][]byte
	for ok := it.First(); ok; {
		k := it.Key()
		if len(k) < len(pfx)+2 {
			ok = it.Next()
			continue
		}
		end := len(pfx) + 2 + int(binary.BigEndian.Uint16(k[len(pfx):]))
		if len(k) < end {
			ok = it.Next()
			continue
		}
		if len(out) == maxSubranges {
			it.Close()
			return nil, false, nil
		}
		sub := append([]byte(nil), k[:end]...)
		out = append(out, sub)
		ok = it.SeekGE(prefixEnd(sub))
	}
	return out, true, it.Close()
}
