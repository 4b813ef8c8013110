package callhook

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestAdminCommandSaysHowToPointIt: with nothing on the admin address, the
// error names the address tried and the three ways to name another.
func TestAdminCommandSaysHowToPointIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers there now
	cl, err := newAdminClient(addr, "", "", "text", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	err = cl.deliveries(nil)
	if err == nil {
		t.Fatal("no error with nothing on the admin address")
	}
	for _, want := range []string{addr, "--address", "--config", "CADDY_ADMIN", "2999"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// TestDeliveriesTableOneLinePerDelivery: a multi-line error (an
// expression's caret) or a tab stays in its cell.
func TestDeliveriesTableOneLinePerDelivery(t *testing.T) {
	var out bytes.Buffer
	cl := adminClient{addr: "x", stdout: &out, do: func(string, string, string, http.Header, io.Reader) (*http.Response, error) {
		body := `{"deliveries":[{"id":"msg_1","state":"dead","target":"t","webhook":"w","last_error":"webhook w: param p: invalid\n | call.duration * 2\n | ....^\tend"},` +
			`{"id":"msg_2","state":"pending","target":"t","webhook":"v"}]}`
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(body))}, nil
	}}
	if err := cl.deliveries(nil); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines for a header and 2 deliveries:\n%s", len(lines), out.String())
	}
	if !strings.Contains(lines[1], "| call.duration * 2 | ....^ end") {
		t.Errorf("the error's lines are not joined in its cell: %q", lines[1])
	}
}
