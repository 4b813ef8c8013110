package delivery

import (
	"context"
	"net/http"
	"testing"
)

// TestSendClassifiesStatusAndRPCErrors: statuses outside 1xx-5xx are not
// HTTP errors worth retrying, and a JSON-RPC error code that says the
// request is wrong is permanent even in a non-2xx answer (SPEC §5).
func TestSendClassifiesStatusAndRPCErrors(t *testing.T) {
	for _, tt := range []struct {
		name      string
		status    int
		body      string
		jsonrpc   bool
		retryable bool
		reason    string
	}{
		{"503", 503, "", false, true, "http 503"},
		{"599", 599, "", false, true, "http 599"},
		{"600", 600, "", false, false, "http 600"},
		{"999", 999, "", false, false, "http 999"},
		{"rpc invalid params in a 500", 500, `{"jsonrpc":"2.0","error":{"code":-32602,"message":"bad phone"},"id":"x"}`, true, false, "http 500: jsonrpc error -32602: bad phone"},
		{"rpc method not found in a 404", 404, `{"jsonrpc":"2.0","error":{"code":-32601,"message":"no such method"},"id":"x"}`, true, false, "http 404: jsonrpc error -32601: no such method"},
		{"rpc server error in a 500", 500, `{"jsonrpc":"2.0","error":{"code":-32000,"message":"db down"},"id":"x"}`, true, true, "http 500"},
		{"not json in a 500", 500, `oops`, true, true, "http 500"},
		{"rpc body without jsonrpc policy", 500, `{"jsonrpc":"2.0","error":{"code":-32602,"message":"x"},"id":"x"}`, false, true, "http 500"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := server(t, func(w http.ResponseWriter, _ *http.Request, _ <-chan struct{}) {
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			})
			d := delivery(srv.URL)
			d.Policy.JSONRPC = tt.jsonrpc
			r := newTestSender(t, SenderOptions{}).Send(context.Background(), d)
			if r.OK || r.Retryable != tt.retryable || r.Reason != tt.reason {
				t.Errorf("ok %v retryable %v reason %q; want retryable %v reason %q", r.OK, r.Retryable, r.Reason, tt.retryable, tt.reason)
			}
		})
	}
}
