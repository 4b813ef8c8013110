package redact

import (
	"strings"
	"testing"

	"github.com/callhook/caddy-callhook/module/queue"
)

func TestHeader(t *testing.T) {
	for i, tc := range []struct {
		name, value, want string
	}{
		{"Authorization", "Bearer x", Mask},
		{"proxy-authorization", "Basic x", Mask},
		{"Cookie", "a=b", Mask},
		{"X-Api-Key", "k", Mask},
		{"X-Auth-User", "u", Mask},
		{"X-Request-Token", "t", Mask},
		{"X-Client-Secret", "s", Mask},
		{"X-Hub-Signature", "s", Mask},
		{"X-Password", "s", Mask},
		{"Content-Type", "application/json", "application/json"},
		{"X-Trace", "c-1", "c-1"},
		{"User-Agent", "callhook/1", "callhook/1"},
	} {
		if got := Header(tc.name, tc.value); got != tc.want {
			t.Errorf("test %d: Header(%q) = %q, want %q", i, tc.name, got, tc.want)
		}
	}
}

func TestURL(t *testing.T) {
	for i, tc := range []struct {
		in, want string
	}{
		{"https://h/p", "https://h/p"},
		{"https://h/p?a=1&b=2", "https://h/p?a=1&b=2"},
		{"https://h/p?token=abc&x=1", "https://h/p?token=[redacted]&x=1"},
		{"https://h/p?x=1&API_KEY=abc&key=k&apikey=a", "https://h/p?x=1&API_KEY=[redacted]&key=[redacted]&apikey=[redacted]"},
		{"https://h/p?access_token=a&client_secret=b&password=c&signature=d&sig=e", "https://h/p?access_token=[redacted]&client_secret=[redacted]&password=[redacted]&signature=[redacted]&sig=[redacted]"},
		{"https://h/p?to%6Ben=abc", "https://h/p?to%6Ben=[redacted]"},
		{"https://h/p?token", "https://h/p?token=[redacted]"},
		{"https://h/p?token=a#frag", "https://h/p?token=[redacted]#frag"},
		{"https://h/p?key_phrase=buy&design=x", "https://h/p?key_phrase=buy&design=x"},
		{"https://u:pw@h/p", "https://u:[redacted]@h/p"},
		{"https://tok123@h/p", "https://[redacted]@h/p"},
		{"https://u:p@w@h", "https://u:[redacted]@h"},
		{"/relative?api_token=x", "/relative?api_token=[redacted]"},
	} {
		if got := URL(tc.in); got != tc.want {
			t.Errorf("test %d: URL(%q) = %q, want %q", i, tc.in, got, tc.want)
		}
	}
}

func TestText(t *testing.T) {
	for i, tc := range []struct {
		in, want string
	}{
		{"", ""},
		{"http 500", "http 500"},
		{"redirect not followed (302 to https://h/login?api_token=s3cr3t&x=1)", "redirect not followed (302 to https://h/login?api_token=[redacted]&x=1)"},
		{`Post "https://user:pw@h/p?sig=abc": dial tcp: refused`, `Post "https://user:[redacted]@h/p?sig=[redacted]": dial tcp: refused`},
		{"see /a?token=zzz, then", "see /a?token=[redacted], then"},
		{`{"error":"bad","access_token":"zzz","n":1}`, `{"error":"bad","access_token":"[redacted]","n":1}`},
		{`{"headers":{"authorization":"Bearer zzz"}}`, `{"headers":{"authorization":"[redacted]"}}`},
		{"<r><apiKey>zzz</apiKey><id>1</id></r>", "<r><apiKey>[redacted]</apiKey><id>1</id></r>"},
		{"a=1&password=zzz&b=2", "a=1&password=[redacted]&b=2"},
		{"key_phrase=buy monkey business", "key_phrase=buy monkey business"},
		{"https://h/p?token=a.", "https://h/p?token=[redacted]."},
	} {
		if got := Text(tc.in); got != tc.want {
			t.Errorf("test %d: Text(%q)\n got %q\nwant %q", i, tc.in, got, tc.want)
		}
	}
}

func TestFor(t *testing.T) {
	d := &queue.Delivery{
		Request: queue.Request{
			URL: "https://bob:hunter22@h/p?token=qtok-1&x=plain",
			Header: [][2]string{
				{"Authorization", "Bearer btok-22"},
				{"X-Api-Key", "kkey-333"},
				{"X-Trace", "trace-4444"},
			},
		},
	}
	r := For(d, []byte("signing-55555"))
	echo := "got hunter22 qtok-1 btok-22 kkey-333 signing-55555 Bearer btok-22 trace-4444 plain"
	got := r.Text(echo)
	for _, s := range []string{"hunter22", "qtok-1", "btok-22", "kkey-333", "signing-55555"} {
		if strings.Contains(got, s) {
			t.Errorf("%q left in %q", s, got)
		}
	}
	if !strings.Contains(got, "trace-4444") || !strings.Contains(got, "plain") {
		t.Errorf("ordinary values are redacted too: %q", got)
	}
	// Short values are not scrubbed by value: they would blank out text.
	if got := New("ab").Scrub("abcabc"); got != "abcabc" {
		t.Errorf("a 2-byte secret was scrubbed: %q", got)
	}
	var nilR *Redactor
	if nilR.Scrub("x") != "x" || For(nil).Text("a") != "a" {
		t.Error("a nil or empty redactor changes text")
	}
}

func TestValue(t *testing.T) {
	v := Value(map[string]any{
		"data":    map[string]any{"call_id": "c-1", "api_key": "zz", "list": []any{"https://h/?token=zz"}},
		"Headers": map[string]any{"cookie": "zz", "x-trace": "ok"},
	}).(map[string]any)
	data := v["data"].(map[string]any)
	headers := v["Headers"].(map[string]any)
	if data["call_id"] != "c-1" || data["api_key"] != Mask || data["list"].([]any)[0] != "https://h/?token="+Mask ||
		headers["cookie"] != Mask || headers["x-trace"] != "ok" {
		t.Errorf("Value = %v", v)
	}
}
