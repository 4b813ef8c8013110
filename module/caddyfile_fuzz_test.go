package callhook

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The Caddyfile fuzz targets feed any text to the callhook handler block
// and to the callhook global option, both through the real adapter (what
// `caddy adapt` runs) and straight into the unmarshalers with a dispenser
// that does not insist on balanced braces. Errors are fine; a panic, an
// empty error or adapted JSON that does not parse is not. Seeds live in
// testdata/fuzz/<FuzzName>/.

func FuzzCaddyfileHandler(f *testing.F) {
	f.Fuzz(func(t *testing.T, body string) {
		if skipFuzzCaddyfile(body) {
			return
		}
		fuzzAdapt(t, ":8080 {\n\tcallhook {\n"+body+"\n\t}\n}\n")

		d, ok := fuzzDispenser("callhook {\n" + body + "\n}")
		if !ok {
			return
		}
		h := new(Handler)
		if err := h.UnmarshalCaddyfile(d); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if _, err := json.Marshal(h); err != nil {
			t.Fatalf("an unmarshalled handler does not encode: %v", err)
		}
	})
}

func FuzzCaddyfileGlobal(f *testing.F) {
	f.Fuzz(func(t *testing.T, body string) {
		if skipFuzzCaddyfile(body) {
			return
		}
		fuzzAdapt(t, "{\n\tcallhook {\n"+body+"\n\t}\n}\n:8080 {\n\tcallhook\n}\n")

		d, ok := fuzzDispenser("callhook {\n" + body + "\n}")
		if !ok {
			return
		}
		v, err := parseGlobalOption(d, nil)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if v == nil {
			t.Fatal("no app and no error")
		}
	})
}

// skipFuzzCaddyfile leaves out what only exercises Caddy's own parser:
// imports read files from disk.
func skipFuzzCaddyfile(body string) bool {
	return strings.Contains(body, "import")
}

// fuzzDispenser tokenizes src; caddyfile.NewTestDispenser would exit the
// process (log.Fatal) on text the lexer refuses, which the adapter above
// has already covered.
func fuzzDispenser(src string) (*caddyfile.Dispenser, bool) {
	tokens, err := caddyfile.Tokenize([]byte(src), "Caddyfile")
	if err != nil {
		return nil, false
	}
	return caddyfile.NewDispenser(tokens), true
}

func fuzzAdapt(t *testing.T, src string) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		if err.Error() == "" {
			t.Fatal("empty adapt error")
		}
		return
	}
	if !json.Valid(out) {
		t.Fatalf("adapted JSON is not valid: %s", out)
	}
}
