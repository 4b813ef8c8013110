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
