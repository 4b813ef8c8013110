package callhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/queue"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "callhook",
		Short: "Commands for callhook webhooks",
		Long: `
Commands for callhook, the call-event webhook plugin.

  render      prints the webhook requests one call event would produce,
              without sending anything
  deliveries  lists deliveries of the running Caddy (--state dead ...)
  retry       puts a dead delivery back in the queue
  replay      renders a stored event again and queues fresh deliveries
  test        sends one test request to a webhook, queueing nothing

deliveries, retry, replay and test talk to the running Caddy's admin endpoint
(--address, default localhost:2019).
`,
		CobraFunc: func(cmd *cobra.Command) {
			renderCmd := &cobra.Command{
				Use:   "render --config <path> [--event <name>] [--data <file|->] [--adapter <name>] [--target <name>] [--webhook <name>] [--format text|json] [--show-secrets]",
				Short: "Prints the requests an event would produce, without sending them",
				Long: `
Loads the config, compiles every callhook handler in it exactly as Caddy
does, decodes the data file as the body of a call event (JSON, or a form
such as a=1&b=2; - reads stdin) and prints every request that event would
produce: webhook, method, URL, headers and body. Nothing is sent, no queue
is opened and no server is started.

--target and --webhook narrow the output to one handler's target or one
webhook. Credential headers and query parameters are shown as [redacted]
unless --show-secrets is given. The delivery ID is msg_render; the
webhook-timestamp and webhook-signature headers are added when each attempt
is sent.

Without --data, the event is a built-in sample of that event (realistic,
sparse where a PBX sends little: before_call has no duration yet and a
hidden caller is "anonymous"). Without --event and --data, every webhook is
rendered on the sample of each event it fires on: a quick check that no
when or param breaks on ordinary input.

A webhook whose when or params fail to evaluate for this event is reported
with the Caddyfile line of the failing option.

Exit status: 0 when every matching webhook rendered (or its when was false),
1 when any webhook failed to render, 2 for usage and config errors.
`,
				RunE: func(cmd *cobra.Command, args []string) error {
					return caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
						if len(args) > 0 {
							return exitUsage, fmt.Errorf("unexpected argument %q: render takes only flags (see caddy callhook render --help)", args[0])
						}
						return runRender(renderOptions{
							config:      fl.String("config"),
							adapter:     fl.String("adapter"),
							event:       fl.String("event"),
							data:        fl.String("data"),
							target:      fl.String("target"),
							webhook:     fl.String("webhook"),
							format:      fl.String("format"),
							showSecrets: fl.Bool("show-secrets"),
						}, os.Stdin, os.Stdout, os.Stderr)
					})(cmd, args)
				},
			}
			renderCmd.Flags().StringP("config", "c", "", "Configuration file (required)")
			renderCmd.Flags().StringP("adapter", "a", "", "Name of config adapter (default: caddyfile when the file name contains Caddyfile)")
			renderCmd.Flags().StringP("event", "e", "", "Event name, such as after_call (default: every event, on sample data)")
			renderCmd.Flags().StringP("data", "d", "", "File with the event body, JSON or form; - for stdin (default: a sample of the event)")
			renderCmd.Flags().StringP("target", "t", "", "Only the handler with this target")
			renderCmd.Flags().StringP("webhook", "w", "", "Only the webhook with this name")
			renderCmd.Flags().StringP("format", "f", "text", "Output format: text or json")
			renderCmd.Flags().Bool("show-secrets", false, "Show credential headers and query parameters instead of [redacted]")
			// A usage error exits 2, like the flag package does; cobra
			// would make it 1, which here means "a webhook failed".
			renderCmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
				fmt.Fprintf(c.ErrOrStderr(), "Error: %v\n\n%s", err, c.UsageString())
				os.Exit(exitUsage)
				return err
			})
			cmd.AddCommand(renderCmd)
			addAdminCommands(cmd)
		},
	})
}

// Exit statuses of caddy callhook render.
const (
	exitRenderFailed = 1
	exitUsage        = 2
)

// renderID is the delivery ID of previews; real ones are msg_<uuidv7>.
const renderID = "msg_render"

type renderOptions struct {
	config, adapter, event, data, target, webhook, format string
	showSecrets                                           bool
	// all: every event in turn, on its sample (no --event, no --data)
	all bool
}

// renderResult is one webhook's preview; --format json prints a list.
type renderResult struct {
	Target  string       `json:"target"`
	Event   string       `json:"event"`
	Webhook string       `json:"webhook"`
	Method  string       `json:"method"`
	URL     string       `json:"url"`
	Headers []headerView `json:"headers"`
	Body    string       `json:"body"`
	// Signed says a webhook-signature header is added at send time.
	Signed bool `json:"signed"`
	// Sample says which built-in sample was rendered when it is not an
	// ordinary one: the event with every optional field missing.
	Sample string `json:"sample,omitempty"`
	// Skipped is why nothing would be sent although the webhook is
	// declared for the event (its `when` is false).
	Skipped string `json:"skipped,omitempty"`
	// Error is why the webhook cannot be rendered for this event: the
	// delivery would be stored dead with this error.
	Error string `json:"error"`
	// Reply is set, and Webhook empty, for the answer to the caller of an
	// event with a `reply`: as it is when no sync webhook answers (each
	// sync.<name> nil), which is what the caller gets whenever the lookup
	// fails. Error is then why the reply fails (the caller would get 500).
	Reply *replyPreview `json:"reply,omitempty"`
}

// runRender is `caddy callhook render`. It returns the exit status and, for
// a non-zero one, the error to report.
func runRender(o renderOptions, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	switch {
	case o.config == "":
		return exitUsage, errors.New("--config is required: the Caddyfile or JSON config with the callhook handlers")
	case o.event == "" && o.data != "":
		return exitUsage, fmt.Errorf("--event is required with --data: one of %s", strings.Join(intake.EventNames, ", "))
	case o.event != "" && !intake.IsEventName(o.event):
		return exitUsage, fmt.Errorf("--event %q is not a callhook event: expected one of %s", o.event, strings.Join(intake.EventNames, ", "))
	case o.format != "text" && o.format != "json":
		return exitUsage, fmt.Errorf("--format %q: expected text or json", o.format)
	}

	cfgJSON, lines, err := loadRenderConfig(o.config, o.adapter, stderr)
	if err != nil {
		return exitUsage, err
	}
	handlers, err := findHandlers(cfgJSON)
	if err != nil {
		return exitUsage, err
	}
	if len(handlers) == 0 {
		return exitUsage, fmt.Errorf("%s has no callhook handler", o.config)
	}
	var data []byte
	switch o.data {
	case "":
	case "-":
		data, err = io.ReadAll(stdin)
	default:
		data, err = os.ReadFile(o.data)
	}
	if err != nil {
		return exitUsage, fmt.Errorf("reading the event data: %v", err)
	}
	app, err := appFromConfig(cfgJSON)
	if err != nil {
		return exitUsage, fmt.Errorf("%s: %v", o.config, err)
	}
	for _, h := range handlers {
		if err := prepareHandler(h, app); err != nil {
			return exitUsage, fmt.Errorf("%s: %v", o.config, err)
		}
	}
	if o.event != "" {
		return renderEvent(o, handlers, lines, data, stdout, stderr)
	}
	// every event on its sample: one report, failures counted over all
	status := 0
	var failures []string
	for _, ev := range intake.EventNames {
		eo := o
		eo.event, eo.all = ev, true
		st, err := renderEvent(eo, handlers, lines, nil, stdout, io.Discard)
		if st == exitUsage {
			return st, err
		}
		if st != 0 {
			status = st
			failures = append(failures, err.Error())
		}
	}
	if status != 0 {
		return status, errors.New(strings.Join(failures, "; "))
	}
	return 0, nil
}

// renderEvent renders one event (data, or the event's sample when data is
// nil) through the handlers.
func renderEvent(o renderOptions, handlers []*Handler, lines webhookLines, data []byte, stdout, stderr io.Writer) (int, error) {
	sample := data == nil
	bodies := [][]byte{data}
	if sample {
		bodies = nil
		for _, b := range sampleEvents[o.event] {
			bodies = append(bodies, []byte(b))
		}
		o.data = "(sample " + o.event + ")"
	}

	var targets []string
	var selected []*Handler
	for _, h := range handlers {
		targets = append(targets, h.Target)
		if o.target != "" && h.Target != o.target {
			continue
		}
		// A handler with a literal event only ever sees that event.
		if h.Event != "" && !strings.Contains(h.Event, "{") && h.Event != o.event {
			fmt.Fprintf(stderr, "note: target %s is skipped: its handler's event is fixed to %s\n", h.Target, h.Event)
			continue
		}
		selected = append(selected, h)
	}
	if o.target != "" && !slices.Contains(targets, o.target) {
		return exitUsage, fmt.Errorf("--target %q: no callhook handler has that target; targets in %s: %s", o.target, o.config, strings.Join(uniq(targets), ", "))
	}
	if err := checkWebhookFlag(o, selected); err != nil {
		if o.all {
			return 0, nil // checking every event: this one has nothing to check
		}
		return exitUsage, err
	}

	now := time.Now()
	results := []renderResult{}
	failed := 0
	for _, h := range selected {
		for _, data := range bodies {
			ev, err := decodeRenderData(h, o.event, data)
			if err != nil {
				return exitUsage, fmt.Errorf("event data %s (target %s): %v", o.data, h.Target, err)
			}
			for _, hook := range h.hooks {
				if (o.webhook != "" && hook.Name() != o.webhook) || !hook.Fires(o.event) {
					continue
				}
				res := renderResult{Target: h.Target, Event: o.event, Webhook: hook.Name(), Headers: []headerView{}}
				if sample && string(data) == bareSample {
					res.Sample = "only call_id, every optional field missing"
				}
				d := hook.Render(ev, h.Target, renderID, now)
				switch {
				case d == nil:
					res.Skipped = "its when expression is false for this event"
				case d.State == queue.Dead:
					res.Error = d.LastError
					if at := lines.locate(h.Target, d.Webhook, d.LastError); at != "" {
						res.Error += ", at " + at
					}
					failed++
				default:
					fillRequest(&res, d, hook.Secrets(), o.showSecrets)
				}
				results = append(results, res)
			}
			if rp := h.replies[o.event]; rp != nil && o.webhook == "" {
				res := previewReply(h, rp, ev)
				if sample && string(data) == bareSample {
					res.Sample = "only call_id, every optional field missing"
				}
				if res.Error != "" {
					failed++
				}
				results = append(results, res)
			}
		}
	}

	if o.format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false) // bodies are XML and forms: keep them readable
		enc.SetIndent("", "\t")
		if err := enc.Encode(results); err != nil {
			return exitUsage, err
		}
	} else {
		printText(stdout, o, results)
	}
	if failed > 0 {
		what := "this " + o.event + " event"
		if sample {
			what = "the sample " + o.event + " event (run with --event " + o.event + " to see it)"
		}
		return exitRenderFailed, fmt.Errorf("%d of %d webhooks could not be rendered for %s; their deliveries would be stored dead", failed, len(results), what)
	}
	return 0, nil
}

// checkWebhookFlag makes --webhook a usage error when it names no webhook
// of the selected handlers, or one that does not fire on the event.
func checkWebhookFlag(o renderOptions, selected []*Handler) error {
	if o.webhook == "" {
		return nil
	}
	var names, declared []string
	for _, h := range selected {
		for _, hook := range h.hooks {
			names = append(names, hook.Name())
			if hook.Name() != o.webhook {
				continue
			}
			if hook.Fires(o.event) {
				return nil
			}
			declared = append(declared, hook.On()...)
		}
	}
	if declared != nil {
		return fmt.Errorf("--webhook %s does not fire on %s: it is declared for %s", o.webhook, o.event, strings.Join(uniq(declared), ", "))
	}
	return fmt.Errorf("--webhook %q: no such webhook; webhooks: %s", o.webhook, strings.Join(uniq(names), ", "))
}

// loadRenderConfig reads and adapts the config like `caddy run` does, and
// indexes the Caddyfile's webhook options by line for error messages.
func loadRenderConfig(path, adapter string, stderr io.Writer) ([]byte, webhookLines, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the config: %v", err)
	}
	base := strings.ToLower(filepath.Base(path))
	if adapter == "" && strings.Contains(base, "caddyfile") && filepath.Ext(base) != ".json" {
		adapter = "caddyfile"
	}
	if adapter == "" {
		if !json.Valid(body) {
			return nil, nil, fmt.Errorf("%s is not valid JSON; for a Caddyfile add --adapter caddyfile", path)
		}
		return body, nil, nil
	}
	a := caddyconfig.GetAdapter(adapter)
	if a == nil {
		return nil, nil, fmt.Errorf("unknown config adapter %q", adapter)
	}
	cfgJSON, warnings, err := a.Adapt(body, map[string]any{"filename": path})
	if err != nil {
		return nil, nil, fmt.Errorf("adapting %s with %s: %v", path, adapter, err)
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w.String())
	}
	var lines webhookLines
	if adapter == "caddyfile" {
		lines = indexCaddyfile(path, body)
	}
	return cfgJSON, lines, nil
}

// findHandlers walks the whole config for callhook handlers, wherever they
// are (routes, subroutes, handle blocks), in a stable order.
func findHandlers(cfgJSON []byte) ([]*Handler, error) {
	var root any
	if err := json.Unmarshal(cfgJSON, &root); err != nil {
		return nil, fmt.Errorf("reading the config JSON: %v", err)
	}
	var out []*Handler
	var walk func(v any) error
	walk = func(v any) error {
		switch x := v.(type) {
		case map[string]any:
			if x["handler"] == "callhook" {
				delete(x, "handler") // the module's inline key, not a field
				raw, err := json.Marshal(x)
				if err != nil {
					return err
				}
				h := new(Handler)
				if err := caddy.StrictUnmarshalJSON(raw, h); err != nil {
					return fmt.Errorf("callhook handler: %v", err)
				}
				out = append(out, h)
				return nil
			}
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if err := walk(x[k]); err != nil {
					return err
				}
			}
		case []any:
			for _, e := range x {
				if err := walk(e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, walk(root)
}

// prepareHandler does what Handler.Provision does, without a Caddy context:
// defaults, timezone, field mappings, and every webhook compiled from the
// same config, with {env.*} expanded and the app's destination rules.
func prepareHandler(h *Handler, app *App) error {
	if err := h.compile(caddy.NewReplacer()); err != nil {
		return err
	}
	return h.checkLoad(app.loadChecks())
}

// appFromConfig reads the callhook app's settings from a config's JSON
// (defaults when it has none), for the checks that need them.
func appFromConfig(cfgJSON []byte) (*App, error) {
	var cfg struct {
		Apps struct {
			Callhook json.RawMessage `json:"callhook"`
		} `json:"apps"`
	}
	app := new(App)
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		return nil, fmt.Errorf("reading the config JSON: %v", err)
	}
	if len(cfg.Apps.Callhook) > 0 {
		if err := json.Unmarshal(cfg.Apps.Callhook, app); err != nil {
			return nil, fmt.Errorf("callhook app: %v", err)
		}
	}
	return app, nil
}

// decodeRenderData decodes data as the handler would decode a POST with it:
// a JSON object, or else a form.
func decodeRenderData(h *Handler, event string, data []byte) (*intake.Event, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, errors.New("it is empty; give a JSON object such as {\"call_id\":\"c-1\"}")
	}
	ctype := "application/x-www-form-urlencoded"
	if trimmed[0] == '{' || trimmed[0] == '[' {
		ctype = "application/json"
	}
	r, err := http.NewRequest(http.MethodPost, "http://callhook.invalid/"+event, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	r.Header.Set("Content-Type", ctype)
	r.RemoteAddr = "127.0.0.1:0"
	ev, err := intake.Decode(r, intake.Options{
		Location:  h.loc,
		MaxBody:   h.MaxBody,
		EventName: event,
		Remap:     h.fields.Remap,
	})
	if err != nil {
		var ie *intake.Error
		if errors.As(err, &ie) {
			return nil, errors.New(ie.Msg)
		}
		return nil, err
	}
	return ev, nil
}

// fillRequest puts the rendered request in res, with the headers the sender
// adds (User-Agent, webhook-id) so the preview is what goes on the wire.
func fillRequest(res *renderResult, d *queue.Delivery, secrets [][]byte, showSecrets bool) {
	rv := viewRequest(d, secrets, showSecrets)
	res.Method, res.URL, res.Body = rv.Method, rv.URL, rv.Body
	res.Headers = rv.Headers
	hasUA := slices.ContainsFunc(rv.Headers, func(h headerView) bool { return strings.EqualFold(h.Name, "User-Agent") })
	if !hasUA {
		res.Headers = append(res.Headers, headerView{Name: "User-Agent", Value: "callhook/" + Version})
	}
	res.Headers = append(res.Headers, headerView{Name: "webhook-id", Value: d.ID})
	res.Signed = len(secrets) > 0
}

func printText(w io.Writer, o renderOptions, results []renderResult) {
	fmt.Fprintf(w, "# callhook render: nothing was sent. The delivery ID is %s here;\n# webhook-timestamp and webhook-signature are added when each attempt is sent.\n", renderID)
	if len(results) == 0 {
		fmt.Fprintf(w, "\n# no webhook fires on %s", o.event)
		if o.target != "" {
			fmt.Fprintf(w, " for target %s", o.target)
		}
		fmt.Fprintln(w)
		return
	}
	for _, r := range results {
		if r.Reply != nil {
			printReply(w, r)
			continue
		}
		fmt.Fprintf(w, "\n# webhook %s (target %s, event %s", r.Webhook, r.Target, r.Event)
		if r.Sample != "" {
			fmt.Fprintf(w, "; sample with %s", r.Sample)
		}
		fmt.Fprint(w, ")")
		switch {
		case r.Error != "":
			// expr errors span lines (the expression and a caret)
			fmt.Fprintf(w, ": NOT RENDERED\n# error: %s\n", strings.ReplaceAll(r.Error, "\n", "\n# "))
			continue
		case r.Skipped != "":
			fmt.Fprintf(w, ": not sent: %s\n", r.Skipped)
			continue
		}
		fmt.Fprintf(w, "\n%s %s\n", r.Method, r.URL)
		for _, h := range r.Headers {
			fmt.Fprintf(w, "%s: %s\n", h.Name, h.Value)
		}
		fmt.Fprintln(w, "webhook-timestamp: <unix time of the attempt>")
		if r.Signed {
			fmt.Fprintln(w, "webhook-signature: v1,<HMAC-SHA256 of id.timestamp.body with the webhook's secret>")
		}
		if r.Body != "" {
			fmt.Fprintf(w, "\n%s\n", r.Body)
		}
	}
}

func uniq(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// webhookLines maps target, webhook and option ("" for the webhook
// itself, "param NAME", "header NAME", "when", "url", ...) to "file:line".
type webhookLines map[[3]string]string

// locate finds the Caddyfile line of what a render error is about: errors
// read "webhook X: param Y: ...", "webhook X: when: ...", "webhook X:
// header H: ..." or "webhook X: url ...".
func (l webhookLines) locate(target, webhook, reason string) string {
	if l == nil {
		return ""
	}
	var options []string
	for k := range l {
		if k[0] == target && k[1] == webhook && k[2] != "" {
			options = append(options, k[2])
		}
	}
	if at, ok := l[[3]string{target, webhook, webhookOption(webhook, reason, options)}]; ok {
		return at
	}
	return l[[3]string{target, webhook, ""}]
}

// indexCaddyfile finds every webhook option inside callhook handler blocks.
// It walks the parsed tokens (imports and snippets expanded, so lines point
// into the file that has them) and tracks braces; an option is the first
// token on its line.
func indexCaddyfile(path string, body []byte) webhookLines {
	blocks, err := caddyfile.Parse(path, body)
	if err != nil {
		return nil
	}
	var toks []caddyfile.Token
	for _, b := range blocks {
		for _, s := range b.Segments {
			toks = append(toks, s...)
		}
	}
	// Imported tokens keep their own lines, which may be before the
	// import's: any change of line starts a new one.
	firstOnLine := func(i int) bool {
		return i == 0 || toks[i-1].File != toks[i].File || toks[i-1].Line+toks[i-1].NumLineBreaks() != toks[i].Line
	}
	// opensBlock reports whether the line that starts at i ends with "{".
	opensBlock := func(i int) bool {
		j := i + 1
		for j < len(toks) && !firstOnLine(j) {
			j++
		}
		return toks[j-1].Text == "{" && !toks[j-1].Quoted()
	}
	arg := func(i int) string {
		if i+1 < len(toks) && !firstOnLine(i+1) && !(toks[i+1].Text == "{" && !toks[i+1].Quoted()) {
			return toks[i+1].Text
		}
		return ""
	}
	type entry struct{ webhook, opt, at string }
	out := webhookLines{}
	var (
		depth        int
		handlerDepth = -1 // depth inside the current callhook block
		webhookDepth = -1 // depth inside the current webhook block
		target, hook string
		entries      []entry
	)
	for i, t := range toks {
		if !t.Quoted() && (t.Text == "{" || t.Text == "}") {
			if t.Text == "{" {
				depth++
				continue
			}
			if depth == webhookDepth {
				webhookDepth = -1
			}
			if depth == handlerDepth {
				if target == "" {
					target = "default"
				}
				for _, e := range entries {
					out[[3]string{target, e.webhook, e.opt}] = e.at
				}
				handlerDepth, entries = -1, nil
			}
			depth--
			continue
		}
		if !firstOnLine(i) {
			continue
		}
		at := fmt.Sprintf("%s:%d", t.File, t.Line)
		switch {
		case handlerDepth < 0 && t.Text == "callhook":
			target = arg(i)
			if opensBlock(i) {
				handlerDepth = depth + 1
			}
		case depth == handlerDepth && t.Text == "target":
			target = arg(i)
		case depth == handlerDepth && t.Text == "webhook":
			hook = arg(i)
			entries = append(entries, entry{hook, "", at})
			if opensBlock(i) {
				webhookDepth = depth + 1
			}
		case depth == webhookDepth:
			opt := t.Text
			if opt == "param" || opt == "header" {
				opt += " " + arg(i)
			}
			entries = append(entries, entry{hook, opt, at})
		}
	}
	return out
}
