package embedded

import (
	"encoding/binary"
	"time"
)

// Key prefixes. Strings inside keys are length-prefixed (uint16), so no
// prefix of one key range is a prefix of another whatever bytes the
// strings hold. Times are 8-byte big-endian unix nanoseconds, so byte
// order is time order.
const (
	pStatic   = 'D' // D id                        -> static record (request, policy, names)
	pMutable  = 'S' // S id                        -> mutable record (state, due, counters)
	pAttempt  = 'A' // A id n(4)                   -> attempt record
	pDue      = 'Q' // Q lane due(8) seq(8)        -> id: every pending, not gated delivery
	pOrder    = 'O' // O orderKey seq(8)           -> id: ordered deliveries not yet finished
	pEvent    = 'E' // E id                        -> event record
	pEventAt  = 'T' // T received(8) id            -> nil (prune of events)
	pDedup    = 'K' // K key                       -> dedup record
	pDedupAt  = 'k' // k created(8) key            -> nil (prune of dedup keys)
	pIndex    = 'X' // X field ... created(8) seq(8) -> id (List; see index.go)
	pFinished = 'F' // F finished(8) seq(8)        -> id: delivered, for the prune
	pPause    = 'P' // P webhookKey                -> pause record
	pMeta     = 'M' // M name                      -> meta values
)

// Index fields of the X range (format version 3; see index.go).
const (
	ixAll   = 'a' // X a created seq                : every delivery
	ixHook  = 'h' // X h target webhook created seq : by target, then webhook
	ixCall  = 'c' // X c callID created seq         : by call
	ixEvent = 'v' // X v eventID created seq        : by event
	ixState = 's' // X s state created seq          : pending and dead only
)

var (
	metaVersion = []byte{pMeta, 'v'}
	metaCounts  = []byte{pMeta, 'n'}
	metaSeq     = []byte{pMeta, 'q'}
)

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(timeNano(t)))
}

func strKey(p byte, s string) []byte {
	b := make([]byte, 1, 3+len(s))
	b[0] = p
	return appendStr(b, s)
}

func staticKey(id string) []byte  { return strKey(pStatic, id) }
func mutableKey(id string) []byte { return strKey(pMutable, id) }
func eventKey(id string) []byte   { return strKey(pEvent, id) }
func dedupKey(k string) []byte    { return strKey(pDedup, k) }
func pauseKey(k string) []byte    { return strKey(pPause, k) }

func attemptPrefix(id string) []byte { return strKey(pAttempt, id) }
func attemptKey(id string, n uint32) []byte {
	return binary.BigEndian.AppendUint32(attemptPrefix(id), n)
}

// lanePrefix is the due-index range of one lane.
func lanePrefix(lane string) []byte { return strKey(pDue, lane) }
func dueKey(lanePfx []byte, due time.Time, seq uint64) []byte {
	b := make([]byte, 0, len(lanePfx)+16)
	b = append(b, lanePfx...)
	b = appendTime(b, due)
	return binary.BigEndian.AppendUint64(b, seq)
}

// parseDue splits the tail of a due key in lane lanePfx.
func parseDue(k []byte, pfxLen int) (time.Time, uint64, bool) {
	if len(k) != pfxLen+16 {
		return time.Time{}, 0, false
	}
	return nanoTime(int64(binary.BigEndian.Uint64(k[pfxLen:]))), binary.BigEndian.Uint64(k[pfxLen+8:]), true
}

func orderPrefix(orderKey string) []byte { return strKey(pOrder, orderKey) }
func orderKey(orderKeyS string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(orderPrefix(orderKeyS), seq)
}

func eventAtKey(received time.Time, id string) []byte {
	return append(appendTime([]byte{pEventAt}, received), id...)
}

func dedupAtKey(created time.Time, k string) []byte {
	return append(appendTime([]byte{pDedupAt}, created), k...)
}

// indexPrefix is the prefix of an index range narrowed by values, each
// length-prefixed.
func indexPrefix(field byte, values ...string) []byte {
	b := []byte{pIndex, field}
	for _, v := range values {
		b = appendStr(b, v)
	}
	return b
}

// indexKey is an index key: the prefix, then the delivery's position in
// List order.
func indexKey(pfx []byte, created time.Time, seq uint64) []byte {
	b := make([]byte, 0, len(pfx)+16)
	b = appendTime(append(b, pfx...), created)
	return binary.BigEndian.AppendUint64(b, seq)
}

func finishedKey(finished time.Time, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendTime([]byte{pFinished}, finished), seq)
}

// prefixEnd is the smallest key after every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // every byte was 0xff: no upper bound
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
