package embedded

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/zap"
)

// rebuildIndexes replaces a version 2 store's List indexes (seven keys per
// delivery) with this version's (see index.go), from the deliveries'
// records, then marks the store version 3. Nothing else changed between
// the two versions. A crash part way leaves version 2 in place, and the
// next open starts over.
func (q *Queue) rebuildIndexes() error {
	if err := q.db.DeleteRange([]byte{pIndex}, []byte{pIndex + 1}, pebble.NoSync); err != nil {
		return err
	}
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pStatic}, UpperBound: []byte{pStatic + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	b := q.db.NewBatch()
	defer b.Close()
	w := &wtx{q: q, b: b, o: &op{}}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		if len(k) < 3 {
			continue
		}
		id := string(k[3:])
		st, _, err := decodeStaticHead(it.Value())
		if err != nil {
			return fmt.Errorf("delivery %s: %w", id, err)
		}
		mv, err := q.getRaw(mutableKey(id))
		if err != nil {
			return err
		}
		if mv == nil {
			continue // a half-removed delivery: nothing to list
		}
		m, err := decodeMutable(mv)
		if err != nil {
			return fmt.Errorf("delivery %s: %w", id, err)
		}
		writeIndexes(w, id, st, m.seq, m.state)
		w.o.fx = w.o.fx[:0] // the scheduler is not running yet
		n++
		if b.Len() > 4<<20 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			b.Reset()
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	b.Set(metaVersion, u64(formatVersion), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	q.log.Info("queue upgraded: list indexes rebuilt in the version 3 layout",
		zap.String("dir", q.dir), zap.Int("deliveries", n))
	return nil
}
