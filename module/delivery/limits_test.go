package delivery

import (
	"testing"
	"time"
)

func TestLimiterBudgets(t *testing.T) {
	l := NewLimiter()
	now := time.Now()
	l.SetLimits(map[string]WebhookLimit{
		"t/conc": {Concurrency: 2},
		"t/rate": {Rate: 2, Burst: 2},
		"t/none": {},
	})
	b, paused, wake := l.budgets(now)
	if b["t/conc"] != 2 || b["t/rate"] != 2 || len(b) != 2 || paused != nil || wake != 0 {
		t.Fatalf("budgets = %v %v %v", b, paused, wake)
	}
	l.start("t/conc", now)
	l.start("t/rate", now)
	l.start("t/rate", now)
	b, _, wake = l.budgets(now)
	if b["t/conc"] != 1 || b["t/rate"] != 0 || wake <= 0 || wake > 600*time.Millisecond {
		t.Fatalf("after starts: %v, wake %v", b, wake)
	}
	// Tokens come back with time; in-flight slots when attempts end.
	b, _, _ = l.budgets(now.Add(time.Second))
	if b["t/rate"] != 2 {
		t.Errorf("after a second: rate budget %d, want 2", b["t/rate"])
	}
	l.done("t/conc")
	if b, _, _ = l.budgets(now); b["t/conc"] != 2 {
		t.Errorf("after done: %v", b)
	}
	// A reload with the same rate keeps the bucket (no fresh burst).
	l.SetLimits(map[string]WebhookLimit{"t/rate": {Rate: 2, Burst: 2}})
	if b, _, _ = l.budgets(now); b["t/rate"] != 0 || len(b) != 1 {
		t.Errorf("after a reload: %v", b)
	}
	l.SetPaused("t/x", true)
	if _, p, _ := l.budgets(now); !p["t/x"] || !l.Paused("t/x") {
		t.Errorf("paused = %v", p)
	}
	l.SetPaused("t/x", false)
	if _, p, _ := l.budgets(now); p != nil {
		t.Errorf("resumed: paused = %v", p)
	}
}

// TestLimiterTryStart: a sync call starts at once or not at all: over its
// concurrency, out of rate tokens or paused, it is refused with why.
func TestLimiterTryStart(t *testing.T) {
	l := NewLimiter()
	now := time.Now()
	l.SetLimits(map[string]WebhookLimit{"t/conc": {Concurrency: 1}, "t/rate": {Rate: 1, Burst: 1}})
	if ok, why := l.TryStart("t/conc", now); !ok {
		t.Fatalf("first call refused: %s", why)
	}
	if ok, why := l.TryStart("t/conc", now); ok || why == "" {
		t.Errorf("second call in flight with concurrency 1: %v %q", ok, why)
	}
	l.Done("t/conc")
	if ok, _ := l.TryStart("t/conc", now); !ok {
		t.Errorf("after Done the slot is free again")
	}
	if ok, _ := l.TryStart("t/rate", now); !ok {
		t.Errorf("first token refused")
	}
	if ok, why := l.TryStart("t/rate", now); ok || why != "its rate_limit is reached" {
		t.Errorf("no token left: %v %q", ok, why)
	}
	if ok, _ := l.TryStart("t/rate", now.Add(time.Second)); !ok {
		t.Errorf("a token a second later refused")
	}
	l.SetPaused("t/free", true)
	if ok, why := l.TryStart("t/free", now); ok || why == "" {
		t.Errorf("paused webhook: %v %q", ok, why)
	}
	if ok, _ := l.TryStart("t/none", now); !ok {
		t.Errorf("an unlimited webhook refused")
	}
}
