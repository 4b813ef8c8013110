package callhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/callhook/caddy-callhook/internal/redact"
)

// The `caddy callhook` subcommands that talk to a running Caddy through its
// admin endpoint (the admin API of admin.go, so nothing is done twice):
//
//	caddy callhook deliveries [--state dead] [--webhook W] [--event E] [--call-id C] [--target T] [--limit N] [--cursor X] [--format text|json]
//	caddy callhook retry <delivery-id>
//	caddy callhook replay <event-id>
//	caddy callhook test <target> <webhook> [--event E] [--data file.json]   (command_test_send.go)
//
// --address (or --config/--adapter, as for caddy reload) names the admin
// endpoint; the default is Caddy's, localhost:2019, or CADDY_ADMIN.

// addAdminCommands adds the admin subcommands to `caddy callhook`.
func addAdminCommands(cmd *cobra.Command) {
	addressFlags := func(c *cobra.Command) {
		c.Flags().String("address", "", "The address of Caddy's admin endpoint (default: from --config, else $CADDY_ADMIN, else localhost:2019)")
		c.Flags().StringP("config", "c", "", "Configuration file whose admin address to use")
		c.Flags().StringP("adapter", "a", "", "Name of config adapter to apply with --config")
		c.Flags().StringP("format", "f", "text", "Output format: text or json (the admin API's answer)")
	}
	run := func(f func(adminClient, *cobra.Command, []string) error) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, args []string) error {
			return caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
				cl, err := newAdminClient(fl.String("address"), fl.String("config"), fl.String("adapter"), fl.String("format"), os.Stdout)
				if err != nil {
					return exitUsage, err
				}
				if err := f(cl, c, args); err != nil {
					var ue usageError
					if errors.As(err, &ue) {
						return exitUsage, err
					}
					return 1, err
				}
				return 0, nil
			})(c, args)
		}
	}

	deliveries := &cobra.Command{
		Use:   "deliveries [--state pending|leased|delivered|dead] [--webhook <name>] [--event <name>] [--call-id <id>] [--target <name>] [--limit <n>] [--cursor <c>]",
		Short: "Lists deliveries of the running Caddy's callhook queue",
		Long: `
Lists deliveries, newest first, from the admin API of the running Caddy
(GET /callhook/deliveries), with the same filters. Credentials in URLs,
errors and responses are redacted by the server. The last line names the
cursor of the next page when there is one.
`,
		RunE: run(func(cl adminClient, c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unexpected argument %q: deliveries takes only flags", args[0])}
			}
			q := url.Values{}
			for flag, param := range map[string]string{"state": "state", "webhook": "webhook", "event": "event", "call-id": "call_id", "target": "target", "limit": "limit", "cursor": "cursor", "event-id": "event_id"} {
				if v, _ := c.Flags().GetString(flag); v != "" {
					q.Set(param, v)
				}
			}
			return cl.deliveries(q)
		}),
	}
	for _, f := range []string{"state", "webhook", "event", "call-id", "target", "event-id"} {
		deliveries.Flags().String(f, "", "Only deliveries with this "+strings.ReplaceAll(f, "-", "_"))
	}
	deliveries.Flags().String("limit", "", fmt.Sprintf("How many deliveries to list, at most (default %d, up to %d)", defaultAdminLimit, maxAdminLimit))
	deliveries.Flags().String("cursor", "", "Where the next page starts: the cursor the last line of the previous page names")
	addressFlags(deliveries)

	retry := &cobra.Command{
		Use:   "retry <delivery-id>",
		Short: "Puts a dead delivery back in the queue",
		Long: `
Retries one dead delivery of the running Caddy (POST
/callhook/deliveries/<id>/retry): it is due now, with a fresh attempt budget.
A delivery in another state is refused (exit status 1).
`,
		RunE: run(func(cl adminClient, _ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{errors.New("retry takes one delivery ID (see caddy callhook deliveries --state dead)")}
			}
			return cl.retry(args[0])
		}),
	}
	addressFlags(retry)

	replay := &cobra.Command{
		Use:   "replay <event-id>",
		Short: "Renders a stored event again and queues fresh deliveries",
		Long: `
Replays one stored event of the running Caddy (POST
/callhook/events/<id>/replay): it is rendered with the config in force now
and queued as a new event, whatever the dedup window says.
`,
		RunE: run(func(cl adminClient, _ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{errors.New("replay takes one event ID (the event_id of a delivery or of an ingest answer)")}
			}
			return cl.replay(args[0])
		}),
	}
	addressFlags(replay)
	cmd.AddCommand(deliveries, retry, replay, testCommand(addressFlags, run))
}

// usageError exits with status 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// adminClient calls the admin API of a running Caddy.
type adminClient struct {
	addr   string
	json   bool
	stdout io.Writer
	// do sends a request (caddycmd.AdminAPIRequest; replaced in tests).
	do func(addr, method, uri string, headers http.Header, body io.Reader) (*http.Response, error)
}

func newAdminClient(address, config, adapter, format string, stdout io.Writer) (adminClient, error) {
	if format != "text" && format != "json" {
		return adminClient{}, fmt.Errorf("--format %q: expected text or json", format)
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, config, adapter)
	if err != nil {
		return adminClient{}, fmt.Errorf("finding the admin endpoint: %v", err)
	}
	return adminClient{addr: addr, json: format == "json", stdout: stdout, do: caddycmd.AdminAPIRequest}, nil
}

// call sends one request and decodes the answer into v; an error answer
// becomes the error, with its message.
func (cl adminClient) call(method, uri string, v any) ([]byte, error) {
	res, err := cl.do(cl.addr, method, uri, nil, nil)
	if err != nil {
		if strings.HasPrefix(err.Error(), "performing request:") {
			return nil, cl.unreachable(err)
		}
		// AdminAPIRequest turns an error answer into an error that holds the
		// body; its message is the API's own.
		return nil, errors.New(apiErrorText(err.Error()))
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s %s: %v", method, uri, err)
	}
	if res.StatusCode >= 300 {
		return nil, errors.New(apiErrorText(string(raw)))
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, fmt.Errorf("the answer of %s %s is not what this command expects (is the plugin on the server the same version?): %v", method, uri, err)
		}
	}
	return raw, nil
}

// unreachable is the error when nothing answers at the admin address: the
// usual cause is a Caddy whose config moved its admin endpoint (the quick
// start's is localhost:2999), so it says how to point the command there.
func (cl adminClient) unreachable(err error) error {
	return fmt.Errorf("nothing answers at %s, the admin endpoint this command uses (%v): is Caddy running? "+
		"If its config sets another `admin` address (the quick start's is localhost:2999), name it with "+
		"--address localhost:2999, --config <its Caddyfile>, or the CADDY_ADMIN environment variable", cl.addr, err)
}

// oneLine puts a text on one line for a table cell: a multi-line error
// (an expression's caret, a receiver's body) or a tab would break the rows.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// apiErrorText keeps the status and the message of an {"error": ...}
// answer in s.
func apiErrorText(s string) string {
	prefix := ""
	if m := httpStatusPattern.FindString(s); m != "" {
		prefix = m + " "
	}
	if i := strings.Index(s, "{"); i >= 0 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(s[i:]), &e) == nil && e.Error != "" {
			return prefix + redact.Text(e.Error)
		}
	}
	return redact.Text(s)
}

var httpStatusPattern = regexp.MustCompile(`HTTP \d{3}:`)

func (cl adminClient) deliveries(q url.Values) error {
	uri := "/callhook/deliveries"
	if len(q) > 0 {
		uri += "?" + q.Encode()
	}
	var page listAnswer
	raw, err := cl.call(http.MethodGet, uri, &page)
	if err != nil {
		return err
	}
	if cl.json {
		_, err := cl.stdout.Write(raw)
		return err
	}
	tw := tabwriter.NewWriter(cl.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tTARGET/WEBHOOK\tEVENT\tCALL_ID\tCREATED\tATTEMPTS\tLAST_ERROR")
	for _, d := range page.Deliveries {
		lastErr, _ := cutText(oneLine(redact.Text(d.LastError)), 160)
		state := string(d.State)
		if d.SyncCall {
			state += " (sync call)" // not retried: its call is over
		}
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%d\t%s\n", d.ID, state, d.Target, d.Webhook, d.Event, d.CallID, d.CreatedAt, len(d.Attempts), lastErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(page.Deliveries) == 0 {
		fmt.Fprintln(cl.stdout, "(no deliveries match)")
	}
	if page.NextCursor != "" {
		fmt.Fprintf(cl.stdout, "next page: --cursor %s\n", page.NextCursor)
	}
	return nil
}

func (cl adminClient) retry(id string) error {
	var ans struct {
		Retried  int          `json:"retried"`
		Delivery deliveryView `json:"delivery"`
	}
	raw, err := cl.call(http.MethodPost, "/callhook/deliveries/"+url.PathEscape(id)+"/retry", &ans)
	if err != nil {
		return err
	}
	if cl.json {
		_, err := cl.stdout.Write(raw)
		return err
	}
	state := ans.Delivery.State
	if state == "" {
		state = "pending"
	}
	_, err = fmt.Fprintf(cl.stdout, "retried %s: %s, due now\n", id, state)
	return err
}

func (cl adminClient) replay(eventID string) error {
	var ans replayAnswer
	raw, err := cl.call(http.MethodPost, "/callhook/events/"+url.PathEscape(eventID)+"/replay", &ans)
	if err != nil {
		return err
	}
	if cl.json {
		_, err := cl.stdout.Write(raw)
		return err
	}
	fmt.Fprintf(cl.stdout, "replayed %s as event %s with %d deliveries\n", eventID, ans.EventID, len(ans.Deliveries))
	for _, d := range ans.Deliveries {
		line := fmt.Sprintf("  %s\t%s\t%s", d.ID, d.Webhook, d.State)
		if d.Error != "" {
			line += "\t" + oneLine(redact.Text(d.Error))
		}
		fmt.Fprintln(cl.stdout, line)
	}
	return nil
}

func cutText(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	return excerpt(s, n), true
}
