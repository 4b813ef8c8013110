package mapping

import (
	"slices"
	"testing"

	"github.com/callhook/caddy-callhook/module/intake"
)

func TestCompileReply(t *testing.T) {
	tests := []struct {
		src   string
		names []string
	}{
		{"sync.crm_route?.json?.manager_ext ?? '100'", []string{"crm_route"}},
		{`sync["a"].status == 200 ? sync.b.body : call.caller`, []string{"a", "b"}},
		{"call.caller", nil},
	}
	for _, tt := range tests {
		prog, names, err := CompileReply(tt.src)
		if err != nil {
			t.Fatalf("%s: %v", tt.src, err)
		}
		slices.Sort(names)
		if !slices.Equal(names, tt.names) {
			t.Errorf("%s: names %v, want %v", tt.src, names, tt.names)
		}
		if _, err := prog.Run(&ReplyEnv{Call: &intake.Call{}, Sync: map[string]any{}}); err != nil && tt.names == nil {
			t.Errorf("%s: run: %v", tt.src, err)
		}
	}
	// nil-safe fallback when the sync webhook did not answer
	prog, _, _ := CompileReply("sync.crm?.json?.ext ?? '100'")
	v, err := prog.Run(&ReplyEnv{Sync: map[string]any{"crm": nil}})
	if err != nil || v != "100" {
		t.Errorf("fallback: %v %v", v, err)
	}
	v, _ = prog.Run(&ReplyEnv{Sync: map[string]any{"crm": map[string]any{"json": map[string]any{"ext": "205"}}}})
	if v != "205" {
		t.Errorf("answered: %v", v)
	}
	if _, _, err := CompileReply("sync.crm.json +"); err == nil {
		t.Error("syntax error compiled")
	}
}
