package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestIntakeEdges: the answers of SPEC §3 for what real senders get wrong.
func TestIntakeEdges(t *testing.T) {
	rc := newReceiver(t, nil)
	startCaddy(t, `allow_destinations 127.0.0.1/32`, fmt.Sprintf(`
	handle /calls/* {
		callhook {
			max_body 1MiB
			webhook ok {
				on after_call
				url %[1]s/ok
				param id call.call_id
			}
			webhook broken {
				on after_call
				url %[1]s/broken
				param next "call.duration + 1"
			}
		}
	}`, rc.URL))

	t.Run("call_id over 256 bytes", func(t *testing.T) {
		status, a := postJSON(t, "/calls/after_call", `{"call_id":"`+strings.Repeat("x", 2000)+`"}`)
		if status != http.StatusBadRequest || !strings.Contains(a.Error, "at most 256 bytes") {
			t.Errorf("status %d, error %q; want 400 naming the limit", status, a.Error)
		}
	})

	t.Run("JSON sent as a form", func(t *testing.T) {
		status, a, _ := send(t, "POST", "/calls/after_call", "application/x-www-form-urlencoded", `{"call_id":"c-1"}`)
		if status != http.StatusBadRequest || !strings.Contains(a.Error, "Content-Type: application/json") {
			t.Errorf("status %d, error %q; want 400 with a Content-Type hint", status, a.Error)
		}
	})

	t.Run("answer states", func(t *testing.T) {
		status, a := postJSON(t, "/calls/after_call", `{"call_id":"states-1"}`)
		if status != http.StatusAccepted || !strings.HasPrefix(a.EventID, "msg_") || len(a.Deliveries) != 2 {
			t.Fatalf("status %d, answer %+v", status, a)
		}
		for _, d := range a.Deliveries {
			switch d.Webhook {
			case "ok":
				if d.State != "pending" || d.Error != "" {
					t.Errorf("ok: state %q error %q, want pending", d.State, d.Error)
				}
			case "broken":
				if d.State != "dead" || !strings.Contains(d.Error, "webhook broken: param next") {
					t.Errorf("broken: state %q error %q, want dead with the render error", d.State, d.Error)
				}
			}
		}
		// a repeat shows the same deliveries with their state as it is now
		status, again := postJSON(t, "/calls/after_call", `{"call_id":"states-1"}`)
		if status != http.StatusOK || fmt.Sprint(again.ids()) != fmt.Sprint(a.ids()) {
			t.Fatalf("repeat: status %d, answer %+v", status, again)
		}
		for _, d := range again.Deliveries {
			if d.Webhook == "broken" && (d.State != "dead" || d.Error == "") {
				t.Errorf("repeat: broken is %q %q, want dead with its error", d.State, d.Error)
			}
		}
	})

	// A client that writes its whole body before it reads (Python's urllib)
	// must get the 413, not a connection reset.
	t.Run("413 to a client that sends everything first", func(t *testing.T) {
		for i := range 3 {
			conn, err := net.Dial("tcp", strings.TrimPrefix(caddyBase, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			body := `{"call_id":"big","pad":"` + strings.Repeat("a", 2<<20) + `"}`
			head := fmt.Sprintf("POST /calls/after_call HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
			// in 64 KiB pieces, as a sender on a real network would: the
			// whole body does not fit in the socket buffers at once
			req := head + body
			for off := 0; off < len(req); off += 64 << 10 {
				end := min(off+64<<10, len(req))
				if _, err := io.WriteString(conn, req[off:end]); err != nil {
					t.Fatalf("try %d: writing the 2 MB body, at byte %d: %v (the server closed the connection)", i, off, err)
				}
				time.Sleep(25 * time.Millisecond)
			}
			res, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("try %d: reading the answer: %v", i, err)
			}
			msg, _ := io.ReadAll(res.Body)
			conn.Close()
			if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(msg), "max_body") {
				t.Fatalf("try %d: %d %s, want 413 naming max_body", i, res.StatusCode, msg)
			}
		}
	})
}
