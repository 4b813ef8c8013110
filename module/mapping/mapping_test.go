package mapping

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/intake"
)

func ptr[T any](v T) *T { return &v }

func testEnv() Env {
	start := time.Date(2026, 3, 4, 10, 11, 12, 0, time.UTC)
	return Env{
		Call: &intake.Call{
			CallID:      ptr("c-1"),
			Caller:      ptr("+380441234567"),
			Duration:    ptr(int64(42)),
			StartTime:   &start,
			Disposition: ptr("answered"),
			Tags:        []string{"vip", "new"},
		},
		Data:    map[string]any{"crm": map[string]any{"name": "Olena"}, "n": int64(3)},
		Event:   "after_call",
		Target:  "acme",
		Request: &intake.RequestInfo{Method: "POST", Headers: map[string]string{"x-pbx": "asterisk"}},
		Webhook: WebhookInfo{Name: "crm"},
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		src, want string
		kind      Kind
	}{
		{"call.calller", "has no field calller", Value},
		{"call.duration > 'x'", "mismatched types", Value},
		{"call.caller + 1", "mismatched types", Value},
		{"call.duration", "expected bool", Bool},
		{"nosuchvar", "unknown name nosuchvar", Value},
		{"", "empty expression", Value},
		{"call.caller ==", "unexpected token", Value},
		{"format_date(call.caller, 'date')", "cannot use", Value},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			_, err := Compile(tt.src, tt.kind)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile(%q) error = %v, want it to contain %q", tt.src, err, tt.want)
			}
		})
	}
}

func TestRun(t *testing.T) {
	env := testEnv()
	empty := Env{Call: &intake.Call{CallID: ptr("x")}, Data: map[string]any{}, Request: &intake.RequestInfo{}}
	tests := []struct {
		src        string
		want       any // after Normalize
		wantEmpty  any
		errOnEmpty string
	}{
		{src: "call.call_id", want: "c-1", wantEmpty: "x"},
		{src: "call.utm_source ?? 'direct'", want: "direct", wantEmpty: "direct"},
		{src: "data.crm.name ?? ''", want: "Olena", wantEmpty: ""},
		{src: "call.duration", want: int64(42), wantEmpty: nil},
		{src: "call.duration * 2", want: int64(84), errOnEmpty: "invalid operation"},
		{src: "call.disposition == 'answered'", want: true, wantEmpty: false},
		{src: "call.tags", want: []any{"vip", "new"}, wantEmpty: nil},
		{src: "request.headers['x-pbx'] ?? 'none'", want: "asterisk", wantEmpty: "none"},
		{src: "event + '/' + target + '/' + webhook.name", want: "after_call/acme/crm", wantEmpty: "//"},
		{src: "format_date(call.start_time, 'date')", want: "2026-03-04", errOnEmpty: "format_date"},
		{src: "digits(call.caller ?? '')", want: "380441234567", wantEmpty: ""},
		{src: "{'a': 1, 'b': [true, nil]}", want: map[string]any{"a": int64(1), "b": []any{true, nil}}, wantEmpty: map[string]any{"a": int64(1), "b": []any{true, nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := Compile(tt.src, Value)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Run(env)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if g := Normalize(got); !equal(g, tt.want) {
				t.Fatalf("got %#v, want %#v", g, tt.want)
			}
			got, err = p.Run(empty)
			if tt.errOnEmpty != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errOnEmpty) {
					t.Fatalf("Run(empty) error = %v, want %q", err, tt.errOnEmpty)
				}
				return
			}
			if err != nil {
				t.Fatalf("Run(empty): %v", err)
			}
			if g := Normalize(got); !equal(g, tt.wantEmpty) {
				t.Fatalf("empty: got %#v, want %#v", g, tt.wantEmpty)
			}
		})
	}
}

func equal(a, b any) bool { return reflect.DeepEqual(a, b) }

func TestRunBool(t *testing.T) {
	p, err := Compile("call.duration > 0", Bool)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := p.RunBool(testEnv()); err != nil || !ok {
		t.Fatalf("RunBool = %v, %v", ok, err)
	}
	// nil in arithmetic: an error naming the problem, not a panic
	if _, err := p.RunBool(Env{Call: &intake.Call{}}); err == nil {
		t.Fatal("want an error for nil duration")
	}
}

func TestMemoryBudget(t *testing.T) {
	p, err := Compile("len(map(1..100000000, # * 2))", Value)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Run(testEnv()); err == nil || !strings.Contains(err.Error(), "memory budget") {
		t.Fatalf("want a memory budget error, got %v", err)
	}
}

func TestMaxNodes(t *testing.T) {
	src := strings.Repeat("1 + ", 3000) + "1"
	if _, err := Compile(src, Value); err == nil {
		t.Fatal("want an error for a huge expression")
	}
}

func TestParseDateFormat(t *testing.T) {
	ts := time.Date(2026, 3, 4, 22, 11, 12, 345000000, time.UTC)
	kyiv, _ := time.LoadLocation("Europe/Kyiv")
	tests := []struct {
		in   string
		loc  *time.Location
		want any
		err  string
	}{
		{in: "", want: "2026-03-04T22:11:12Z"},
		{in: "rfc3339", loc: kyiv, want: "2026-03-05T00:11:12+02:00"},
		{in: "rfc3339_ms", want: "2026-03-04T22:11:12.345Z"},
		{in: "iso8601", want: "2026-03-04T22:11:12+0000"},
		{in: "rfc2822", want: "Wed, 04 Mar 2026 22:11:12 +0000"},
		{in: "datetime", loc: kyiv, want: "2026-03-05 00:11:12"},
		{in: "date", want: "2026-03-04"},
		{in: "unix", want: int64(1772662272)},
		{in: "unix_ms", want: int64(1772662272345)},
		{in: "02.01.2006 15:04", want: "04.03.2026 22:11"},
		{in: "YYYY-MM-DD", err: "formats no date or time component"},
		{in: "hello", err: "formats no date or time component"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			f, err := ParseDateFormat(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Format(ts, tt.loc); got != tt.want {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestE164(t *testing.T) {
	tests := []struct{ in, cc, want, err string }{
		{in: "+38 (044) 123-45-67", cc: "UA", want: "+380441234567"},
		{in: "044 123 45 67", cc: "UA", want: "+380441234567"},
		{in: "380441234567", cc: "UA", want: "+380441234567"},
		{in: "00380441234567", cc: "US", want: "+380441234567"},
		{in: "(415) 555-2671", cc: "US", want: "+14155552671"},
		{in: "8 (916) 123-45-67", cc: "RU", want: "+79161234567"},
		{in: "030 1234567", cc: "de", want: "+49301234567"},
		{in: "123", cc: "UA", err: "not a phone number"},
		{in: "+5", cc: "UA", err: "(1 digit after normalising"},
		{in: "+56", cc: "UA", err: "(2 digits after normalising"},
		{in: "0441234567", cc: "XX", err: "unknown country"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := E164(tt.in, tt.cc)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("E164(%q, %q) = %q, %v; want %q", tt.in, tt.cc, got, err, tt.want)
			}
		})
	}
}

func TestPresetsCompile(t *testing.T) {
	for _, name := range PresetNames() {
		p, _ := Preset(name)
		for _, f := range p {
			if _, err := CompileField(f[1]); err != nil {
				t.Errorf("preset %s field %s: %v", name, f[0], err)
			}
		}
	}
	if _, err := Preset("nope"); err == nil || !strings.Contains(err.Error(), "twilio") {
		t.Fatalf("unknown preset error = %v", err)
	}
}

func TestPresetTwilioRemap(t *testing.T) {
	p, _ := Preset("twilio")
	var fs Fields
	for _, f := range p {
		prog, err := CompileField(f[1])
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, Field{Name: f[0], Prog: prog})
	}
	out, err := fs.Remap(map[string]any{"CallSid": "CA1", "From": "+1415", "Direction": "outbound-api", "CallStatus": "no-answer"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"call_id": "CA1", "caller": "+1415", "direction": "outgoing", "disposition": "no_answer"}
	for k, v := range want {
		if out[k] != v {
			t.Errorf("%s = %#v, want %#v", k, out[k], v)
		}
	}
	if _, ok := out["recording_url"]; ok {
		t.Error("absent fields must not be set")
	}
}
