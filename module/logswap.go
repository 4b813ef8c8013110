package callhook

import (
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// swapCore is a zapcore.Core that writes through whichever core was set
// last. An engine outlives the config that opened it, and Caddy closes a
// config's log writers when that config stops, so the engine's workers and
// queue log through a swapCore that every config taking the engine over
// points at its own logger.
type swapCore struct {
	cur    *atomic.Pointer[zapcore.Core]
	fields []zapcore.Field // from With, applied to the current core
}

func newSwapCore(c zapcore.Core) *swapCore {
	s := &swapCore{cur: new(atomic.Pointer[zapcore.Core])}
	s.set(c)
	return s
}

func (s *swapCore) set(c zapcore.Core) {
	if c == nil {
		c = zapcore.NewNopCore()
	}
	s.cur.Store(&c)
}

func (s *swapCore) core() zapcore.Core {
	c := *s.cur.Load()
	if len(s.fields) > 0 {
		c = c.With(s.fields)
	}
	return c
}

// Enabled implements zapcore.LevelEnabler.
func (s *swapCore) Enabled(l zapcore.Level) bool { return (*s.cur.Load()).Enabled(l) }

// With implements zapcore.Core. The fields stay with the returned core, not
// with the core current now, so a later swap keeps them.
func (s *swapCore) With(fields []zapcore.Field) zapcore.Core {
	return &swapCore{cur: s.cur, fields: append(append([]zapcore.Field(nil), s.fields...), fields...)}
}

// Check implements zapcore.Core.
func (s *swapCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	return s.core().Check(e, ce)
}

// Write implements zapcore.Core. Check hands entries to the current core
// directly, so Write is only reached by callers that skip Check.
func (s *swapCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	return s.core().Write(e, fields)
}

// Sync implements zapcore.Core.
func (s *swapCore) Sync() error { return (*s.cur.Load()).Sync() }

var _ zapcore.Core = (*swapCore)(nil)
