package render

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/callhook/caddy-callhook/module/queue"
)

// hostileValues are param values that mean something in a URL.
var hostileValues = []string{"a/b", "a?b", "a#b", "a&b=c", "a+b", "100%", "a b", "привіт", "a;b,c", "", "%2F", "x:y@z"}

func TestURLEscapingByPosition(t *testing.T) {
	tests := []struct {
		name, url string
		// escaped is how value v must appear in the URL
		escaped func(v string) string
		// decoded reads the value back from the parsed URL
		decoded func(u *url.URL) (string, error)
	}{
		{
			name:    "path",
			url:     "https://crm.example.com/calls/{param.a}/notes",
			escaped: url.PathEscape,
			decoded: func(u *url.URL) (string, error) {
				segs := strings.Split(u.EscapedPath(), "/")
				if len(segs) != 4 || segs[3] != "notes" {
					return "", fmt.Errorf("path %q does not have 3 segments ending in notes", u.EscapedPath())
				}
				return url.PathUnescape(segs[2])
			},
		},
		{
			name:    "query",
			url:     "https://crm.example.com/calls?id={param.a}&x=1",
			escaped: url.QueryEscape,
			decoded: func(u *url.URL) (string, error) {
				q, err := url.ParseQuery(u.RawQuery)
				if err != nil {
					return "", err
				}
				if len(q) != 2 || len(q["id"]) != 1 || q.Get("x") != "1" {
					return "", fmt.Errorf("query %q does not hold exactly id and x=1", u.RawQuery)
				}
				return q.Get("id"), nil
			},
		},
		{
			name:    "query key",
			url:     "https://crm.example.com/calls?{param.a}=1",
			escaped: url.QueryEscape,
			decoded: func(u *url.URL) (string, error) {
				k, v, _ := strings.Cut(u.RawQuery, "=")
				if v != "1" || strings.ContainsAny(k, "&=;") {
					return "", fmt.Errorf("query %q is not one key=1", u.RawQuery)
				}
				return url.QueryUnescape(k)
			},
		},
		{
			name:    "fragment",
			url:     "https://crm.example.com/calls?x=1#tab-{param.a}",
			escaped: func(v string) string { return strings.ReplaceAll(url.QueryEscape(v), "+", "%20") },
			decoded: func(u *url.URL) (string, error) {
				v, ok := strings.CutPrefix(u.Fragment, "tab-")
				if !ok || u.RawQuery != "x=1" {
					return "", fmt.Errorf("fragment %q, query %q", u.Fragment, u.RawQuery)
				}
				return v, nil
			},
		},
		{
			name:    "fragment after a path param",
			url:     "https://crm.example.com/{param.b}#{param.a}",
			escaped: func(v string) string { return strings.ReplaceAll(url.QueryEscape(v), "+", "%20") },
			decoded: func(u *url.URL) (string, error) { return u.Fragment, nil },
		},
	}
	for _, tt := range tests {
		w := mustCompile(t, hook(tt.url))
		for _, v := range hostileValues {
			t.Run(tt.name+"/"+v, func(t *testing.T) {
				d := mustPending(t, render(t, w, map[string]any{"a": v, "b": "p"}))
				want := strings.NewReplacer("{param.a}", tt.escaped(v), "{param.b}", "p").Replace(tt.url)
				if d.Request.URL != want {
					t.Errorf("url = %q, want %q", d.Request.URL, want)
				}
				u, err := url.Parse(d.Request.URL)
				if err != nil {
					t.Fatalf("rendered url does not parse: %v", err)
				}
				if u.Host != "crm.example.com" || u.Scheme != "https" || u.User != nil {
					t.Errorf("scheme %q host %q user %v changed by the value", u.Scheme, u.Host, u.User)
				}
				got, err := tt.decoded(u)
				if err != nil {
					t.Fatal(err)
				}
				if got != v {
					t.Errorf("value read back as %q, want %q", got, v)
				}
				if d.Destination != "https://crm.example.com" {
					t.Errorf("destination = %q", d.Destination)
				}
			})
		}
	}
}

func TestURLValueTypes(t *testing.T) {
	c := hook("https://crm.example.com/{param.a}?b={param.b}")
	c.Params = []Param{
		{Name: "a", Expr: "call.tags"},
		{Name: "b", Expr: "{'k': 'v w', 'n': call.duration}"},
	}
	d := mustPending(t, render(t, mustCompile(t, c), nil))
	// a list joins with commas; a map is JSON; both escaped for position
	want := "https://crm.example.com/vip%2Cnew?b=" + url.QueryEscape(`{"k":"v w","n":42}`)
	if d.Request.URL != want {
		t.Errorf("url = %q, want %q", d.Request.URL, want)
	}
}

func TestURLParamsInHost(t *testing.T) {
	w := mustCompile(t, hook("https://{param.a}.crm.example.com/hook?x={param.b}"))
	tests := []struct {
		value, host string // host "" means a dead delivery
		err         string
	}{
		{value: "acme", host: "acme.crm.example.com"},
		{value: "evil.com/x", err: "url is not valid after filling in the params"},
		{value: "evil.com#", err: "url is not valid after filling in the params"},
		{value: "evil.com?", err: "url is not valid after filling in the params"},
		{value: "u:p@evil.com", err: "credentials"},
		{value: "evil.com:1", err: "url is not valid after filling in the params"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			d := render(t, w, map[string]any{"a": tt.value, "b": "tok-s3cret"})
			if tt.host == "" {
				mustDead(t, d, "webhook crm: ", tt.err)
				if strings.Contains(d.LastError, "tok-s3cret") {
					t.Errorf("the error quotes the URL, and with it what its query carries: %q", d.LastError)
				}
				return
			}
			mustPending(t, d)
			if u, _ := url.Parse(d.Request.URL); u.Host != tt.host {
				t.Errorf("host = %q, want %q", u.Host, tt.host)
			}
		})
	}
}

func TestURLDotSegments(t *testing.T) {
	tests := []struct {
		url, a, b string
		dead      bool
	}{
		{url: "https://h/calls/{param.a}/delete", a: "..", dead: true},
		{url: "https://h/calls/{param.a}/delete", a: ".", dead: true},
		{url: "https://h/calls/{param.a}{param.b}/delete", a: ".", b: ".", dead: true},
		{url: "https://h/calls/.{param.a}", a: ".", dead: true},
		// one segment "..%2Fadmin", which proxies decode and resolve
		{url: "https://h/calls/{param.a}", a: "../admin", dead: true},
		{url: "https://h/calls/{param.a}", a: `..\admin`, dead: true},
		{url: "https://h/calls/{param.a}", a: "x/../../admin", dead: true},
		{url: "https://h/calls/{param.a}", a: "%2e%2e", dead: true}, // %252e%252e: decoded twice it is ".."
		{url: "https://h/calls/{param.a}", a: "a/b"},                // a%2Fb: no dot segment either way
		{url: "https://h/calls/{param.a}", a: "..."},
		{url: "https://h/calls/{param.a}", a: "v1.2"},
		{url: "https://h/calls?id={param.a}", a: ".."},  // only the path is resolved
		{url: "https://h/a/../calls/{param.a}", a: "x"}, // dots written by the config are its business
	}
	for _, tt := range tests {
		t.Run(tt.url+" "+tt.a+tt.b, func(t *testing.T) {
			d := render(t, mustCompile(t, hook(tt.url)), map[string]any{"a": tt.a, "b": tt.b})
			if tt.dead {
				mustDead(t, d, `webhook crm: url: a param value makes a "." or ".." path segment`)
				return
			}
			mustPending(t, d)
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	tests := []struct {
		name string
		c    func(c *Config)
		want string
	}{
		{"unknown placeholder in url", func(c *Config) { c.URL = "https://h/{http.request.host}" },
			"webhook crm: url: unknown placeholder {http.request.host}: only {param.NAME} (and {env.NAME}, resolved at load) can be used here"},
		{"env left over", func(c *Config) { c.URL = "https://h/?t={env.TOKEN}" }, "unknown placeholder {env.TOKEN}"},
		{"undeclared param", func(c *Config) { c.URL = "https://h/{param.c}" },
			"webhook crm: url: {param.c} names no param of this webhook: declare `param c <expression>`"},
		{"unclosed", func(c *Config) { c.URL = "https://h/{param.a" }, "unclosed placeholder"},
		{"unknown placeholder in header", func(c *Config) { c.Headers = []Header{{"X-A", "{a}"}} },
			"webhook crm: header X-A: unknown placeholder {a}"},
		{"undeclared param in header", func(c *Config) { c.Headers = []Header{{"X-A", "{param.zz}"}} }, "{param.zz} names no param"},
		{"no url", func(c *Config) { c.URL = "" }, "no url"},
		{"scheme", func(c *Config) { c.URL = "ftp://h/" }, "the scheme must be http or https"},
		{"scheme from a param", func(c *Config) { c.URL = "{param.a}://h/" }, "the scheme must be http or https"},
		{"no host", func(c *Config) { c.URL = "https:///x" }, "no host"},
		{"credentials", func(c *Config) { c.URL = "https://u:p@h/" }, "credentials in the URL"},
		{"header CR", func(c *Config) { c.Headers = []Header{{"X-A", "a\rb"}} }, "header X-A: the value contains CR, LF, NUL or another control character"},
		{"header control", func(c *Config) { c.Headers = []Header{{"X-A", "a\x01b"}} }, "another control character"},
		{"header name", func(c *Config) { c.Headers = []Header{{"X A", "v"}} }, `header "X A": not a valid header name`},
		{"header host", func(c *Config) { c.Headers = []Header{{"host", "v"}} }, "header host cannot be set by config"},
		{"header webhook-id", func(c *Config) { c.Headers = []Header{{"Webhook-Id", "v"}} }, "header Webhook-Id cannot be set by config"},
		{"GET json", func(c *Config) { c.Method = "GET" }, "method GET sends no body, so format json cannot carry the params"},
		{"rpc_method without jsonrpc", func(c *Config) { c.RPCMethod = "x" }, "rpc_method is only used with format jsonrpc"},
		{"duplicate param", func(c *Config) { c.Params = append(c.Params, Param{"a", "1"}) }, "param a is declared twice"},
		{"when not bool", func(c *Config) { c.When = "call.duration" }, "webhook crm: when: "},
		{"timeout", func(c *Config) { c.Timeout = time.Hour }, "timeout 1h0m0s is more than 10m0s"},
		{"max_attempts", func(c *Config) { c.MaxAttempts = 51 }, "max_attempts 51 is more than 50"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := hook("https://crm.example.com/hook")
			tt.c(&c)
			_, err := Compile(c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "webhook crm: ") {
				t.Errorf("error does not name the webhook: %v", err)
			}
		})
	}
}

func TestHeaderValues(t *testing.T) {
	c := hook("https://crm.example.com/hook")
	c.Headers = []Header{
		{"X-Call", "{param.a}"},
		{"Authorization", "Bearer {param.b}"},
	}
	w := mustCompile(t, c)
	tests := []struct {
		a, b string
		err  string // "" means sent as is
	}{
		{a: "c-1 ü\ttab", b: "tok"},
		{a: "x\r\nX-Injected: 1", b: "tok", err: "webhook crm: header X-Call: the rendered value contains CR, LF, NUL or another control character"},
		{a: "x\ny", b: "tok", err: "header X-Call:"},
		{a: "ok", b: "t\x00k", err: "header Authorization:"},
		{a: "ok", b: "t\x7fk", err: "header Authorization:"},
		{a: "ok", b: "t\x1bk", err: "header Authorization:"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q %q", tt.a, tt.b), func(t *testing.T) {
			d := render(t, w, map[string]any{"a": tt.a, "b": tt.b})
			if tt.err != "" {
				mustDead(t, d, tt.err)
				if strings.Contains(d.LastError, tt.b) && tt.b != "tok" {
					t.Errorf("the error quotes the value: %q", d.LastError)
				}
				if len(d.Request.Header) != 0 || d.Request.URL != "" {
					t.Errorf("a dead delivery keeps a request: %+v", d.Request)
				}
				return
			}
			mustPending(t, d)
			if got := header(d, "X-Call"); len(got) != 1 || got[0] != tt.a {
				t.Errorf("X-Call = %q", got)
			}
			if got := header(d, "Authorization"); len(got) != 1 || got[0] != "Bearer "+tt.b {
				t.Errorf("Authorization = %q", got)
			}
		})
	}
}

func TestContentType(t *testing.T) {
	tests := []struct {
		name    string
		c       func(c *Config)
		want    []string
		hasBody bool
	}{
		{"json default", func(*Config) {}, []string{"application/json"}, true},
		{"xml", func(c *Config) { c.Format = "xml" }, []string{"application/xml; charset=utf-8"}, true},
		{"config overrides", func(c *Config) {
			c.Headers = []Header{{"content-type", "application/vnd.crm+json"}}
		}, []string{"application/vnd.crm+json"}, true},
		{"GET form has none", func(c *Config) { c.Method, c.Format = "GET", "form" }, nil, false},
		{"DELETE form has none", func(c *Config) { c.Method, c.Format = "DELETE", "form" }, nil, false},
		{"DELETE json has a body", func(c *Config) { c.Method = "DELETE" }, []string{"application/json"}, true},
		{"PUT form", func(c *Config) { c.Method, c.Format = "put", "form" }, []string{"application/x-www-form-urlencoded"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := hook("https://crm.example.com/hook")
			tt.c(&c)
			d := mustPending(t, render(t, mustCompile(t, c), map[string]any{"a": "1", "b": "2"}))
			got := header(d, "Content-Type")
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("Content-Type = %q, want %q", got, tt.want)
			}
			if (len(d.Request.Body) > 0) != tt.hasBody {
				t.Errorf("body = %q, want a body: %v", d.Request.Body, tt.hasBody)
			}
		})
	}
}

func TestFormInQuery(t *testing.T) {
	tests := []struct {
		method, url, want string
	}{
		{"GET", "https://h/hook", "https://h/hook?a=x+y&b=1%262"},
		{"GET", "https://h/hook?", "https://h/hook?a=x+y&b=1%262"},
		{"GET", "https://h/hook?k=v", "https://h/hook?k=v&a=x+y&b=1%262"},
		{"GET", "https://h/hook?k=v&", "https://h/hook?k=v&a=x+y&b=1%262"},
		{"GET", "https://h/hook?k=v#top", "https://h/hook?k=v&a=x+y&b=1%262#top"},
		{"DELETE", "https://h/calls/{param.a}", "https://h/calls/x%20y?a=x+y&b=1%262"},
		// a param the query already carries is not appended again (a
		// qs or Rails receiver would read a list); one only in the path
		// or the fragment still is
		{"GET", "https://h/route?a={param.a}", "https://h/route?a=x+y&b=1%262"},
		{"GET", "https://h/route?b={param.b}&a={param.a}", "https://h/route?b=1%262&a=x+y"},
		{"GET", "https://h/route?caller={param.a}", "https://h/route?caller=x+y&b=1%262"},
		{"DELETE", "https://h/calls/{param.a}?b={param.b}", "https://h/calls/x%20y?b=1%262&a=x+y"},
		{"GET", "https://h/route#{param.a}", "https://h/route?a=x+y&b=1%262#x%20y"},
		{"GET", "https://h/route?a={param.a}&b={param.b}", "https://h/route?a=x+y&b=1%262"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.url, func(t *testing.T) {
			c := hook(tt.url)
			c.Method, c.Format = tt.method, "form"
			d := mustPending(t, render(t, mustCompile(t, c), map[string]any{"a": "x y", "b": "1&2"}))
			if d.Request.URL != tt.want || d.Request.Method != tt.method {
				t.Errorf("%s %s, want %s %s", d.Request.Method, d.Request.URL, tt.method, tt.want)
			}
			if len(d.Request.Body) != 0 {
				t.Errorf("body = %q, want none", d.Request.Body)
			}
		})
	}
}

func TestFormatTimes(t *testing.T) {
	kyiv := "Europe/Kyiv"
	tests := []struct {
		dateFormat, tz string
		want           string
	}{
		{"", "", `{"t":"2026-03-04T22:11:12Z","l":["2026-03-04T22:11:12Z",{"in":"2026-03-04T22:11:12Z","n":1,"s":"2026-03-04T22:11:12Z"}],"m":{"deep":{"list":["2026-03-04T22:11:12Z",null]}}}`},
		{"datetime", kyiv, `{"t":"2026-03-05 00:11:12","l":["2026-03-05 00:11:12",{"in":"2026-03-05 00:11:12","n":1,"s":"2026-03-04T22:11:12Z"}],"m":{"deep":{"list":["2026-03-05 00:11:12",null]}}}`},
		{"rfc3339_ms", "America/New_York", `{"t":"2026-03-04T17:11:12.345-05:00","l":["2026-03-04T17:11:12.345-05:00",{"in":"2026-03-04T17:11:12.345-05:00","n":1,"s":"2026-03-04T22:11:12Z"}],"m":{"deep":{"list":["2026-03-04T17:11:12.345-05:00",null]}}}`},
		{"unix_ms", kyiv, `{"t":1772662272345,"l":[1772662272345,{"in":1772662272345,"n":1,"s":"2026-03-04T22:11:12Z"}],"m":{"deep":{"list":[1772662272345,null]}}}`},
	}
	for _, tt := range tests {
		t.Run(tt.dateFormat+" "+tt.tz, func(t *testing.T) {
			c := hook("https://h/hook")
			c.DateFormat, c.Timezone = tt.dateFormat, tt.tz
			c.Params = []Param{
				{Name: "t", Expr: "call.start_time"},
				// a string that looks like a time stays as it is: only times are formatted
				{Name: "l", Expr: "[call.start_time, {'in': call.start_time, 'n': 1, 's': '2026-03-04T22:11:12Z'}]"},
				{Name: "m", Expr: "{'deep': {'list': [call.start_time, nil]}}"},
			}
			d := mustPending(t, render(t, mustCompile(t, c), nil))
			if string(d.Request.Body) != tt.want {
				t.Errorf("body = %s\nwant   %s", d.Request.Body, tt.want)
			}
		})
	}
}

func TestRenderDoesNotModifyEventData(t *testing.T) {
	c := hook("https://h/hook")
	c.Params = []Param{{Name: "d", Expr: "data"}}
	when := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	data := map[string]any{"nested": map[string]any{"t": when}, "list": []any{when}}
	w := mustCompile(t, c)
	for range 2 { // the second render sees the same data
		d := mustPending(t, render(t, w, data))
		if !strings.Contains(string(d.Request.Body), `"2026-01-01T00:00:00Z"`) {
			t.Fatalf("body = %s", d.Request.Body)
		}
	}
	if data["nested"].(map[string]any)["t"] != when || data["list"].([]any)[0] != when {
		t.Fatalf("Render formatted the event's own data in place: %v", data)
	}
}

func TestRenderDead(t *testing.T) {
	tests := []struct {
		name string
		c    func(c *Config)
		want string
	}{
		{"nil in arithmetic", func(c *Config) { c.Params = append(c.Params, Param{"total", "data.n * 2"}) },
			"webhook crm: param total: "},
		{"failed conversion", func(c *Config) { c.Params = append(c.Params, Param{"n", "int(data.a)"}) },
			"webhook crm: param n: "},
		{"when fails", func(c *Config) { c.When = "data.n > 1" }, "webhook crm: when: "},
		{"custom function panics", func(c *Config) { c.Params = append(c.Params, Param{"d", "digits(data.list)"}) },
			"webhook crm: param d: "},
		{"infinite float in json", func(c *Config) { c.Params = append(c.Params, Param{"f", "1 / 0"}) },
			"webhook crm: encoding the json body: "},
		{"too deep for the encoder", func(c *Config) { c.Params = append(c.Params, Param{"deep", "data.deep"}) },
			"webhook crm: encoding the json body: "},
	}
	deep := any("bottom")
	for range 100 {
		deep = []any{deep}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := hook("https://crm.example.com/hook")
			tt.c(&c)
			d := mustDead(t, render(t, mustCompile(t, c), map[string]any{"a": "not a number", "list": []any{1}, "deep": deep}), tt.want)
			if d.ID != "msg_test" || d.Webhook != "crm" || d.Event != "after_call" || d.CallID != "c-1" || d.Target != "acme" {
				t.Errorf("a dead delivery lost who it is: %+v", d)
			}
			if d.Request.Method != "POST" {
				t.Errorf("method = %q", d.Request.Method)
			}
		})
	}
}

func TestWhenFalse(t *testing.T) {
	c := hook("https://h/hook")
	c.When = "call.duration > 100"
	if d := render(t, mustCompile(t, c), nil); d != nil {
		t.Fatalf("fired with a false when: %+v", d)
	}
	c.When = "call.duration > 1"
	mustPending(t, render(t, mustCompile(t, c), nil))
}

func TestParamOrderAndPolicy(t *testing.T) {
	c := hook("https://h/hook")
	c.Params = []Param{{"z", "1"}, {"a", "'x'"}, {"m.b", "true"}, {"m.a", "nil"}}
	c.Secret = "raw-secret"
	c.Timeout, c.MaxAttempts, c.BackoffMin, c.BackoffMax, c.MaxAge = time.Second, 3, 2*time.Second, time.Minute, time.Hour
	d := mustPending(t, render(t, mustCompile(t, c), nil))
	if want := `{"z":1,"a":"x","m":{"b":true,"a":null}}`; string(d.Request.Body) != want {
		t.Errorf("body = %s, want %s", d.Request.Body, want)
	}
	want := queue.Policy{Timeout: time.Second, MaxAttempts: 3, BackoffMin: 2 * time.Second, BackoffMax: time.Minute, MaxAge: time.Hour}
	if got := d.Policy; got.Timeout != want.Timeout || got.MaxAttempts != want.MaxAttempts || got.BackoffMin != want.BackoffMin ||
		got.BackoffMax != want.BackoffMax || got.MaxAge != want.MaxAge || got.SealedSecret != nil {
		t.Errorf("policy = %+v, want %+v (secrets are never rendered into the delivery)", got, want)
	}
}

func TestSecretsAndOrder(t *testing.T) {
	c := hook("https://h/hook")
	newKey := "new-signing-key-of-24-by" // whsec_ keys are at least 24 bytes
	c.Secret, c.RotatedSecrets = "whsec_"+base64.StdEncoding.EncodeToString([]byte(newKey)), []string{"old-raw"}
	c.Ordered = true
	w := mustCompile(t, c)
	if got := w.Secrets(); len(got) != 2 || string(got[0]) != newKey || string(got[1]) != "old-raw" {
		t.Errorf("Secrets() = %q, want [%s old-raw]", got, newKey)
	}
	d := mustPending(t, render(t, w, nil))
	if d.OrderKey == "" || d.OrderKey != OrderKey(d.Target, d.Webhook, d.CallID) {
		t.Errorf("ordered webhook: OrderKey %q", d.OrderKey)
	}
	if OrderKey("a/b", "c", "1") == OrderKey("a", "b/c", "1") {
		t.Error("order keys of different webhooks collide")
	}
	c.Secret = ""
	if _, err := Compile(c); err == nil || !strings.Contains(err.Error(), "secret <new> <old>") {
		t.Errorf("rotated secrets without a current one: %v", err)
	}
	c.RotatedSecrets = []string{"whsec_!!"}
	c.Secret = "whsec_" + base64.StdEncoding.EncodeToString([]byte(newKey))
	if _, err := Compile(c); err == nil || !strings.Contains(err.Error(), "secret 2 of 2") {
		t.Errorf("bad rotated secret: %v", err)
	}
	// too short for a Standard Webhooks secret: refused, saying how long
	c.Secret, c.RotatedSecrets = "whsec_abc", nil
	if _, err := Compile(c); err == nil || !strings.Contains(err.Error(), "secret: a whsec_ secret must decode to at least 24 bytes (Standard Webhooks); this one is 2 bytes") {
		t.Errorf("whsec_abc: %v", err)
	}
	c.Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // the Standard Webhooks example, 24 bytes
	mustCompile(t, c)
}

func TestCheckSet(t *testing.T) {
	mk := func(name string, on ...string) *Webhook {
		c := hook("https://h/hook")
		c.Name, c.On = name, on
		return mustCompile(t, c)
	}
	many := func(n int, on ...string) []*Webhook {
		var hs []*Webhook
		for i := range n {
			hs = append(hs, mk(fmt.Sprintf("h%02d", i), on...))
		}
		return hs
	}
	tests := []struct {
		name  string
		hooks []*Webhook
		want  string // "" means accepted
	}{
		{name: "unique", hooks: []*Webhook{mk("a", "after_call"), mk("b", "after_call")}},
		{name: "duplicate", hooks: []*Webhook{mk("a", "after_call"), mk("b", "before_call"), mk("a", "before_call")},
			want: "target acme: webhook name a is used twice; names must be unique within a target"},
		{name: "40 on one event", hooks: many(40, "after_call")},
		{name: "41 on one event", hooks: many(41, "after_call", "before_call"),
			want: "target acme: event before_call has 41 webhooks; at most 40 are allowed per event per target"},
		{name: "41 over two events", hooks: append(many(40, "after_call"), mk("other", "before_call"))},
		{name: "none", hooks: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSet("acme", tt.hooks)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestURLTooLong: a URL the params make longer than receivers accept is a
// dead delivery saying so (not a 414 retried for days), without the URL.
func TestURLTooLong(t *testing.T) {
	c := hook("https://h/route")
	c.Method, c.Format = "GET", "form"
	long := strings.Repeat("x", MaxURLBytes)
	d := render(t, mustCompile(t, c), map[string]any{"a": long, "b": "1"})
	if d.State != queue.Dead || !strings.Contains(d.LastError, "url: the request URL is 8214 bytes with the params filled in, more than 8192") ||
		!strings.Contains(d.LastError, "method POST") || strings.Contains(d.LastError, "xxxx") {
		t.Errorf("state %s, error %q", d.State, d.LastError)
	}
	// just under the bound is sent
	d = render(t, mustCompile(t, c), map[string]any{"a": long[:MaxURLBytes-len("https://h/route?a=&b=1")], "b": "1"})
	mustPending(t, d)
	if len(d.Request.URL) != MaxURLBytes {
		t.Errorf("URL of %d bytes, want %d", len(d.Request.URL), MaxURLBytes)
	}
}

// TestOmitNil: with omit_nil a param whose value is nil is left out of
// every format (json would send null, form an empty value, xml an empty
// element); without it, it is sent as before.
func TestOmitNil(t *testing.T) {
	tests := []struct {
		method, format, url string
		want, wantURL       string
	}{
		{"POST", "json", "https://h/hook", `{"a":"1","c":{"x":2}}`, "https://h/hook"},
		{"POST", "form", "https://h/hook", `a=1&c%5Bx%5D=2`, "https://h/hook"},
		{"POST", "xml", "https://h/hook", "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<webhook><a>1</a><c><x>2</x></c></webhook>", "https://h/hook"},
		{"GET", "form", "https://h/hook?b={param.b}", "", "https://h/hook?b=&a=1&c%5Bx%5D=2"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.format, func(t *testing.T) {
			c := hook(tt.url)
			c.Method, c.Format, c.OmitNil = tt.method, tt.format, true
			c.Params = append(c.Params, Param{Name: "c", Expr: "{'x': 2}"})
			d := mustPending(t, render(t, mustCompile(t, c), map[string]any{"a": "1"}))
			if string(d.Request.Body) != tt.want || d.Request.URL != tt.wantURL {
				t.Errorf("%s %q, want %s %q", d.Request.URL, d.Request.Body, tt.wantURL, tt.want)
			}
		})
	}
	c := hook("https://h/hook")
	d := mustPending(t, render(t, mustCompile(t, c), map[string]any{"a": "1"}))
	if want := `{"a":"1","b":null}`; string(d.Request.Body) != want {
		t.Errorf("without omit_nil: %s, want %s", d.Request.Body, want)
	}
}
