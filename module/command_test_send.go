package callhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// `caddy callhook test <target> <webhook> [--event E] [--data file.json]`:
// POST /callhook/webhooks/<target>/<webhook>/test on the running Caddy's
// admin endpoint (admin_test_send.go), printed.

// testCommand is the test subcommand, with the admin subcommands' address
// flags and runner.
func testCommand(addressFlags func(*cobra.Command), run func(func(adminClient, *cobra.Command, []string) error) func(*cobra.Command, []string) error) *cobra.Command {
	c := &cobra.Command{
		Use:   "test <target> <webhook> [--event <name>] [--data <file|->]",
		Short: "Sends one test request to a webhook of the running Caddy",
		Long: `
Renders one webhook of the running Caddy's config for a test event and sends
it once, now (POST /callhook/webhooks/<target>/<webhook>/test): through the
same SSRF guard, TLS settings and signing as a real delivery, with a
webhook-id that starts with msg_test_ so the receiver can tell it is a test.
Nothing is queued. It prints the request (credentials redacted), the
receiver's status, headers and the first 4 KB of its answer.

Without --event the webhook's first event is used; without --data, the
built-in sample of that event (the one caddy callhook render uses).

Exit status: 0 when the receiver took the test (2xx), 1 when it did not or
the webhook does not render for the data, 2 for usage errors.
`,
		RunE: run(func(cl adminClient, c *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{errors.New("test takes a target and a webhook name (see caddy callhook deliveries, or GET /callhook/webhooks)")}
			}
			req := testSendRequest{}
			req.Event, _ = c.Flags().GetString("event")
			if file, _ := c.Flags().GetString("data"); file != "" {
				var raw []byte
				var err error
				if file == "-" {
					raw, err = io.ReadAll(os.Stdin)
				} else {
					raw, err = os.ReadFile(file)
				}
				if err != nil {
					return usageError{fmt.Errorf("reading --data: %v", err)}
				}
				if !json.Valid(raw) {
					return usageError{fmt.Errorf("--data %s is not JSON: give the body of an event, such as {\"call_id\": \"c-1\"}", file)}
				}
				req.Data = raw
			}
			return cl.test(args[0], args[1], req)
		}),
	}
	c.Flags().StringP("event", "e", "", "Event to render, such as after_call (default: the webhook's first)")
	c.Flags().StringP("data", "d", "", "File with the event's JSON body; - for stdin (default: a sample of the event)")
	addressFlags(c)
	return c
}

func (cl adminClient) test(target, webhook string, req testSendRequest) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	uri := "/callhook/webhooks/" + url.PathEscape(target) + "/" + url.PathEscape(webhook) + "/test"
	var ans testSendAnswer
	raw, err := cl.callBody(http.MethodPost, uri, body, &ans)
	if err != nil {
		return err
	}
	if cl.json {
		if _, err := cl.stdout.Write(raw); err != nil {
			return err
		}
	} else {
		printTest(cl.stdout, ans)
	}
	if !ans.OK {
		return fmt.Errorf("the test of %s/%s failed (%s): %s", target, webhook, ans.ErrorClass, ans.Error)
	}
	return nil
}

// callBody is call with a JSON request body.
func (cl adminClient) callBody(method, uri string, body []byte, v any) ([]byte, error) {
	do := cl.do
	cl.do = func(addr, method, uri string, headers http.Header, _ io.Reader) (*http.Response, error) {
		if headers == nil {
			headers = http.Header{}
		}
		headers.Set("Content-Type", "application/json")
		return do(addr, method, uri, headers, bytes.NewReader(body))
	}
	return cl.call(method, uri, v)
}

func printTest(w io.Writer, a testSendAnswer) {
	data := a.Event
	if a.Sample {
		data = "the sample " + a.Event + " event"
	}
	outcome := "delivered"
	if !a.OK {
		outcome = "FAILED"
	}
	status := "no response"
	if a.Status != 0 {
		status = fmt.Sprintf("HTTP %d", a.Status)
	}
	fmt.Fprintf(w, "# test of webhook %s (target %s) with %s: %s, %s in %.1f ms; nothing was queued\n", a.Webhook, a.Target, data, outcome, status, a.DurationMS)
	if a.Error != "" {
		fmt.Fprintf(w, "# error (%s): %s\n", a.ErrorClass, a.Error)
	}
	if r := a.Request; r != nil {
		fmt.Fprintf(w, "\n%s %s\n", r.Method, r.URL)
		for _, h := range r.Headers {
			fmt.Fprintf(w, "%s: %s\n", h.Name, h.Value)
		}
		if r.Body != "" {
			fmt.Fprintf(w, "\n%s\n", r.Body)
		}
	}
	if a.Status == 0 {
		return
	}
	fmt.Fprintf(w, "\n# response: HTTP %d\n", a.Status)
	for _, h := range a.ResponseHeaders {
		fmt.Fprintf(w, "%s: %s\n", h.Name, h.Value)
	}
	if a.Response != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimRight(a.Response, "\n"))
		if a.ResponseTruncated {
			fmt.Fprintln(w, "# (first 4 KB of the response)")
		}
	}
}
