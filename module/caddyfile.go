package callhook

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/mapping"
	"github.com/callhook/caddy-callhook/module/render"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("callhook", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("callhook", parseHandlerDirective)
	// The plugin orders itself, so users need no `order` line. Before
	// respond, so `callhook { passthrough }` can hand over to a respond.
	httpcaddyfile.RegisterDirectiveOrder("callhook", httpcaddyfile.Before, "respond")
}

// parseGlobalOption sets up the callhook app from the global option. Syntax:
//
//	callhook {
//		queue <backend> [<args...>] { ... }   # embedded (default) or nats <url>...
//		workers <n>
//		per_destination <n>
//		allow_destinations <cidr|ip>...
//		drain_timeout <duration>
//		retention <duration>
//		https_only
//		secret_key <key>
//	}
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	d.Next() // option name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "queue":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			name := d.Val()
			modID := "callhook.queues." + name
			unm, err := caddyfile.UnmarshalModule(d, modID)
			if err != nil {
				return nil, err
			}
			app.QueueRaw = caddyconfig.JSONModuleObject(unm, "backend", name, nil)
		case "workers":
			n, err := intArg(d)
			if err != nil {
				return nil, err
			}
			app.Workers = n
		case "per_destination":
			n, err := intArg(d)
			if err != nil {
				return nil, err
			}
			app.PerDestination = n
		case "allow_destinations":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.ArgErr()
			}
			if _, err := ParseDestinations(args); err != nil {
				return nil, d.Err(err.Error())
			}
			app.AllowDestinations = append(app.AllowDestinations, args...)
		case "drain_timeout":
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			app.DrainTimeout = caddy.Duration(dur)
		case "retention":
			dur, err := durationArg(d)
			if err != nil {
				return nil, err
			}
			app.Retention = caddy.Duration(dur)
		case "https_only":
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			app.HTTPSOnly = true
		case "secret_key":
			if !d.AllArgs(&app.SecretKey) {
				return nil, d.Errf("secret_key takes one value, usually {env.CALLHOOK_SECRET_KEY}")
			}
			if !strings.Contains(app.SecretKey, "{") && len(app.SecretKey) < minSecretKey {
				return nil, d.Errf("secret_key is %d characters; use at least %d random ones, from the environment: secret_key {env.CALLHOOK_SECRET_KEY}", len(app.SecretKey), minSecretKey)
			}
		default:
			return nil, d.Errf("unknown callhook option %q: expected queue, workers, per_destination, allow_destinations, drain_timeout, retention, https_only or secret_key", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "callhook", Value: caddyconfig.JSON(app, nil)}, nil
}

func parseHandlerDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	handler := new(Handler)
	// The global option is parsed before any site: its allow_destinations
	// and https_only let the URL checks fail here, with the line.
	app := new(App)
	if opt, ok := h.Option("callhook").(httpcaddyfile.App); ok {
		if err := json.Unmarshal(opt.Value, app); err != nil {
			return nil, h.Errf("reading the global callhook option: %v", err)
		}
	}
	handler.adaptChecks = app.loadChecks()
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Every
// expression is compiled here too, so a typo fails `caddy adapt` with the
// line it is on. Syntax:
//
//	callhook [<target>] {
//		target      <name>
//		event       <name|placeholder>
//		token       <token>
//		verify      twilio <auth_token> [<public_url>] | zadarma <api_secret>
//		allow_sources <ip|cidr>...
//		date_format <preset|layout>
//		timezone    <iana zone>
//		passthrough
//		max_body    <size>
//		input       <preset>
//		field       <canonical_field> <expression>
//		dedup       <expression>|off
//		dedup_window <duration>
//		webhook <name> {
//			on           <event>...
//			url          <url>
//			method       GET|POST|PUT|DELETE
//			format       form|json|xml|jsonrpc
//			date_format  <preset|layout>
//			timezone     <iana zone>
//			header       <name> <value>
//			when         <expression>
//			param        <name> <expression>
//			secret       <secret> [<older secret>...]
//			rpc_method   <method>
//			xml_root     <element>
//			timeout      <duration>
//			max_attempts <n>
//			backoff      <first> <longest>
//			max_age      <duration>
//			sync
//			tls {
//				ca <pem file>
//				client_certificate <cert file> <key file>
//				server_name <name>
//				insecure_skip_verify_dangerous
//			}
//			ordered
//			omit_nil
//			rate_limit   <n>/s|<n>/m
//			concurrency  <n>
//			disable_after <duration>
//		}
//		reply <event> {
//			status   <code>
//			format   json|form|xml|text
//			xml_root <element>
//			header   <name> <value>
//			param    <name> <expression>
//		}
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		h.Target = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	var (
		hookLines, replyLines []located
		hookOptions           []optionLines
	)
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "target", "event", "token", "date_format", "timezone", "input":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch opt {
			case "target":
				h.Target = v
			case "event":
				if !strings.Contains(v, "{") && !intake.IsEventName(v) {
					return d.Errf("event %q is not a canonical event name: expected one of %s, or a placeholder", v, strings.Join(intake.EventNames, ", "))
				}
				h.Event = v
			case "token":
				h.Token = v
			case "date_format":
				if _, err := mapping.ParseDateFormat(v); err != nil {
					return d.Err(err.Error())
				}
				h.DateFormat = v
			case "timezone":
				if _, err := time.LoadLocation(v); err != nil {
					return d.Errf("unknown timezone %q: use an IANA name such as Europe/Kyiv or UTC", v)
				}
				h.Timezone = v
			case "input":
				if _, err := mapping.Preset(v); err != nil {
					return d.Err(err.Error())
				}
				h.Input = v
			}
		case "passthrough":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Passthrough = true
		case "max_body":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 1<<40 {
				return d.Errf("max_body %q: expected a size such as 1MiB or 512KB", v)
			}
			h.MaxBody = int64(n)
		case "verify":
			args := d.RemainingArgs()
			switch {
			case len(args) >= 1 && args[0] == "twilio" && (len(args) == 2 || len(args) == 3):
				v := Verifier{Vendor: "twilio", Secret: args[1]}
				if len(args) == 3 {
					v.PublicURL = args[2]
				}
				h.Verify = append(h.Verify, v)
			case len(args) == 2 && args[0] == "zadarma":
				h.Verify = append(h.Verify, Verifier{Vendor: "zadarma", Secret: args[1]})
			default:
				return d.Errf("verify takes a vendor and its secret: verify twilio <auth_token> [<public_url>], or verify zadarma <api_secret>")
			}
			probe := Handler{Verify: h.Verify}
			if err := probe.compileInbound(adaptReplacer()); err != nil {
				return d.Err(err.Error())
			}
		case "allow_sources":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("allow_sources takes one or more client IPs or CIDR ranges: allow_sources 194.88.218.0/24")
			}
			if _, err := parseSources(args); err != nil {
				return d.Err(err.Error())
			}
			h.AllowSources = append(h.AllowSources, args...)
		case "dedup":
			args := d.RemainingArgs()
			if len(args) != 1 {
				return d.Errf("dedup takes one expression, or off; quote an expression with spaces: dedup \"call.call_id\"")
			}
			if _, err := compileDedup(args[0]); err != nil {
				return d.Err(err.Error())
			}
			h.Dedup = args[0]
		case "dedup_window":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if dur > maxDedupWindow {
				return d.Errf("dedup_window %s is more than %s, how long repeats can be remembered", dur, maxDedupWindow)
			}
			h.DedupWindow = caddy.Duration(dur)
		case "field":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return exprArgErr(d, "field", args)
			}
			if !intake.IsField(args[0]) {
				return d.Errf("field %s: not a canonical call field; expected one of %s", args[0], strings.Join(intake.FieldNames(), ", "))
			}
			if _, err := mapping.CompileField(args[1]); err != nil {
				return d.Errf("field %s: %v", args[0], err)
			}
			h.Fields = append(h.Fields, FieldMapping{Name: args[0], Expr: args[1]})
		case "reply":
			file, line := d.File(), d.Line()
			rp, err := parseReply(d)
			if err != nil {
				return err
			}
			h.Replies = append(h.Replies, rp)
			replyLines = append(replyLines, located{file, line})
		case "webhook":
			file, line := d.File(), d.Line()
			w, opts, err := parseWebhook(d)
			if err != nil {
				return err
			}
			h.Webhooks = append(h.Webhooks, w)
			hookLines = append(hookLines, located{file, line})
			hookOptions = append(hookOptions, opts)
		default:
			return d.Errf("unknown callhook subdirective %q: expected target, event, token, verify, allow_sources, date_format, timezone, passthrough, max_body, input, field, dedup, dedup_window, webhook or reply", opt)
		}
	}

	// Checks that need a whole webhook (param names in the URL, XML names,
	// format/method pairs) or the whole target (the 40-per-event limit).
	target := h.Target
	if target == "" {
		target = "default"
	}
	repl := adaptReplacer()
	var hooks []*render.Webhook
	for i, w := range h.Webhooks {
		var hook *render.Webhook
		c, err := w.config(repl, h)
		if err == nil {
			hook, err = render.Compile(c)
		}
		if err == nil {
			err = h.adaptChecks.check(hook)
		}
		if err == nil {
			err = w.checkModes()
		}
		if err == nil {
			err = w.checkTLSScheme(hook)
		}
		if err != nil {
			at := hookOptions[i].at(w.Name, hookLines[i], err.Error())
			return fmt.Errorf("%v, at %s:%d", err, at.file, at.line)
		}
		hooks = append(hooks, hook)
	}
	if err := render.CheckSet(target, hooks); err != nil {
		return d.Err(err.Error())
	}
	h.hooks = hooks
	i, err := h.compileReplies()
	h.hooks, h.replies = nil, nil
	if err != nil {
		if i >= 0 && i < len(replyLines) {
			return fmt.Errorf("%v, at %s:%d", err, replyLines[i].file, replyLines[i].line)
		}
		return d.Err(err.Error())
	}
	if _, err := compileFields(h.Input, h.Fields); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// optionLines maps a webhook's options ("url", "format", "param NAME",
// "header NAME", ...) to where they are written, so that an error found
// only once the whole webhook is known names the line of the option at
// fault, not the webhook's first line.
type optionLines map[string]located

type located struct {
	file string
	line int
}

// at is where an error about reason points: the option it names, else the
// webhook itself.
func (l optionLines) at(webhook string, whole located, reason string) located {
	if at, ok := l[webhookOption(webhook, reason, slices.Collect(maps.Keys(l)))]; ok {
		return at
	}
	return whole
}

// webhookOption names which of a webhook's options (as keyed in
// optionLines) a load error is about, or "" for the webhook as a whole.
// Errors read "webhook X: param Y: ...", "webhook X: header \"H\" ...",
// "webhook X: url host ...", "webhook X: encoding the json body: ...": the
// longest option the reason starts with wins, so "param agent id" beats
// "param agent".
func webhookOption(webhook, reason string, options []string) string {
	rest := strings.TrimPrefix(reason, "webhook "+webhook+": ")
	if strings.HasPrefix(rest, "encoding ") {
		rest = "format" + rest[len("encoding"):]
	}
	best := ""
	for _, opt := range options {
		forms := []string{opt}
		if kind, name, ok := strings.Cut(opt, " "); ok {
			forms = append(forms, kind+" "+strconv.Quote(name))
		}
		for _, f := range forms {
			after, ok := strings.CutPrefix(rest, f)
			if ok && (after == "" || after[0] == ' ' || after[0] == ':') && len(opt) > len(best) {
				best = opt
			}
		}
	}
	return best
}

func parseWebhook(d *caddyfile.Dispenser) (Webhook, optionLines, error) {
	var w Webhook
	if !d.AllArgs(&w.Name) {
		return w, nil, d.Errf("webhook needs exactly one name: webhook <name> { ... }")
	}
	lines := optionLines{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt, at := d.Val(), located{d.File(), d.Line()}
		if err := parseWebhookOption(d, &w, opt); err != nil {
			return w, nil, err
		}
		switch {
		case opt == "param" && len(w.Params) > 0:
			opt += " " + w.Params[len(w.Params)-1].Name
		case opt == "header" && len(w.Headers) > 0:
			opt += " " + w.Headers[len(w.Headers)-1].Name
		}
		if _, seen := lines[opt]; !seen {
			lines[opt] = at
		}
	}
	return w, lines, nil
}

func parseWebhookOption(d *caddyfile.Dispenser, w *Webhook, opt string) error {
	wrap := func(format string, args ...any) error {
		return d.Errf("webhook %s: "+format, append([]any{w.Name}, args...)...)
	}
	one := func() (string, error) {
		var v string
		if !d.AllArgs(&v) {
			return "", wrap("%s takes exactly one value", opt)
		}
		return v, nil
	}
	switch opt {
	case "on":
		evs := d.RemainingArgs()
		if len(evs) == 0 {
			return wrap("on needs one or more events: %s", strings.Join(intake.EventNames, ", "))
		}
		for _, ev := range evs {
			if !intake.IsEventName(ev) {
				return wrap("unknown event %q in `on`: expected one of %s", ev, strings.Join(intake.EventNames, ", "))
			}
		}
		w.On = append(w.On, evs...)
	case "secret":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return wrap("secret takes the secret, then any older ones still in use during a rotation: secret <new> <old>...")
		}
		w.Secret, w.RotatedSecrets = args[0], args[1:]
	case "ordered":
		if d.NextArg() {
			return wrap("ordered takes no value")
		}
		w.Ordered = true
	case "omit_nil":
		if d.NextArg() {
			return wrap("omit_nil takes no value: params whose value is nil are then left out")
		}
		w.OmitNil = true
	case "rate_limit":
		v, err := one()
		if err != nil {
			return err
		}
		if _, _, err := parseRateLimit(v); err != nil {
			return wrap("%v", err)
		}
		w.RateLimit = v
	case "concurrency":
		var v string
		if !d.AllArgs(&v) {
			return wrap("concurrency takes one number: concurrency 4")
		}
		n, err := parsePositiveInt(v)
		if err != nil {
			return wrap("concurrency %v; expected how many attempts may be in flight at once, such as concurrency 4", err)
		}
		w.Concurrency = n
	case "disable_after":
		dur, err := durationArg(d)
		if err != nil {
			return err
		}
		w.DisableAfter = caddy.Duration(dur)
	case "url", "method", "format", "date_format", "timezone", "rpc_method", "xml_root":
		v, err := one()
		if err != nil {
			return err
		}
		switch opt {
		case "url":
			w.URL = v
		case "method":
			w.Method = strings.ToUpper(v)
			if !slices.Contains([]string{"GET", "POST", "PUT", "DELETE"}, w.Method) {
				return wrap("unsupported method %q: expected GET, POST, PUT or DELETE", v)
			}
		case "format":
			w.Format = v
			if !slices.Contains([]string{"form", "json", "xml", "jsonrpc"}, v) {
				return wrap("unknown format %q: expected form, json, xml or jsonrpc", v)
			}
		case "date_format":
			if _, err := mapping.ParseDateFormat(v); err != nil {
				return wrap("%v", err)
			}
			w.DateFormat = v
		case "timezone":
			if _, err := time.LoadLocation(v); err != nil {
				return wrap("unknown timezone %q: use an IANA name such as Europe/Kyiv or UTC", v)
			}
			w.Timezone = v
		case "rpc_method":
			w.RPCMethod = v
		case "xml_root":
			w.XMLRoot = v
		}
	case "header":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return wrap("header takes a name and one value (quote values with spaces): header Authorization \"Bearer {env.TOKEN}\"")
		}
		w.Headers = append(w.Headers, render.Header{Name: args[0], Value: args[1]})
	case "when":
		args := d.RemainingArgs()
		if len(args) != 1 {
			return wrap("when takes one expression; quote it when it has spaces: when \"call.duration > 0\"")
		}
		if _, err := mapping.Compile(args[0], mapping.Bool); err != nil {
			return wrap("when: %v", err)
		}
		w.When = args[0]
	case "param":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return exprArgErr(d, "webhook "+w.Name+": param", args)
		}
		if _, err := mapping.Compile(args[1], mapping.Value); err != nil {
			return wrap("param %s: %v", args[0], err)
		}
		w.Params = append(w.Params, render.Param{Name: args[0], Expr: args[1]})
	case "tls":
		if d.NextArg() {
			return wrap("tls takes a block: tls { ca <file> ... }")
		}
		t := new(WebhookTLS)
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			switch sub := d.Val(); sub {
			case "ca", "server_name":
				var v string
				if !d.AllArgs(&v) {
					return wrap("tls %s takes exactly one value", sub)
				}
				if sub == "ca" {
					t.CA = v
				} else {
					t.ServerName = v
				}
			case "client_certificate":
				args := d.RemainingArgs()
				if len(args) != 2 {
					return wrap("tls client_certificate takes the certificate file and the key file")
				}
				t.ClientCertificate, t.ClientKey = args[0], args[1]
			case "insecure_skip_verify_dangerous":
				if d.NextArg() {
					return wrap("tls insecure_skip_verify_dangerous takes no value")
				}
				t.InsecureSkipVerify = true
			default:
				return wrap("tls: unknown option %q: expected ca, client_certificate, server_name or insecure_skip_verify_dangerous", sub)
			}
		}
		w.TLS = t
	case "sync":
		if d.NextArg() {
			return wrap("sync takes no value")
		}
		w.Sync = true
	case "timeout", "max_age":
		dur, err := durationArg(d)
		if err != nil {
			return err
		}
		if opt == "timeout" {
			w.Timeout = caddy.Duration(dur)
		} else {
			w.MaxAge = caddy.Duration(dur)
		}
	case "max_attempts":
		n, err := intArg(d)
		if err != nil {
			return err
		}
		w.MaxAttempts = n
	case "backoff":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return wrap("backoff takes the first and the longest delay: backoff 1s 1h")
		}
		lo, err1 := caddy.ParseDuration(args[0])
		hi, err2 := caddy.ParseDuration(args[1])
		if err1 != nil || err2 != nil || lo <= 0 || hi <= 0 {
			return wrap("backoff %s %s: expected two positive durations such as 1s 1h", args[0], args[1])
		}
		if hi < lo {
			return wrap("backoff: the longest delay (%s) is shorter than the first (%s)", args[1], args[0])
		}
		w.BackoffMin, w.BackoffMax = caddy.Duration(lo), caddy.Duration(hi)
	default:
		return wrap("unknown option %q: expected on, url, method, format, date_format, timezone, header, when, param, secret, rpc_method, xml_root, timeout, max_attempts, backoff, max_age, tls, sync, ordered, omit_nil, rate_limit, concurrency or disable_after", opt)
	}
	return nil
}

// parseReply parses `reply <event> { ... }`.
func parseReply(d *caddyfile.Dispenser) (Reply, error) {
	var rp Reply
	if !d.AllArgs(&rp.Event) {
		return rp, d.Errf("reply needs exactly one event: reply <event> { ... }")
	}
	if !intake.IsEventName(rp.Event) {
		return rp, d.Errf("reply %s: unknown event: expected one of %s", rp.Event, strings.Join(intake.EventNames, ", "))
	}
	wrap := func(format string, args ...any) error {
		return d.Errf("reply %s: "+format, append([]any{rp.Event}, args...)...)
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "status":
			var v string
			if !d.AllArgs(&v) {
				return rp, wrap("status takes one HTTP status code")
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 200 || n > 599 {
				return rp, wrap("status %q: expected an HTTP status from 200 to 599", v)
			}
			rp.Status = n
		case "format", "xml_root":
			var v string
			if !d.AllArgs(&v) {
				return rp, wrap("%s takes exactly one value", opt)
			}
			if opt == "format" {
				if !slices.Contains(render.ReplyFormats, v) {
					return rp, wrap("unknown format %q: expected json, form, xml or text", v)
				}
				rp.Format = v
			} else {
				rp.XMLRoot = v
			}
		case "header":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return rp, wrap("header takes a name and one value (quote values with spaces)")
			}
			rp.Headers = append(rp.Headers, render.Header{Name: args[0], Value: args[1]})
		case "param":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return rp, exprArgErr(d, "reply "+rp.Event+": param", args)
			}
			if _, _, err := mapping.CompileReply(args[1]); err != nil {
				return rp, wrap("param %s: %v", args[0], err)
			}
			rp.Params = append(rp.Params, render.Param{Name: args[0], Expr: args[1]})
		default:
			return rp, wrap("unknown option %q: expected status, format, xml_root, header or param", opt)
		}
	}
	return rp, nil
}

// exprArgErr explains the usual mistake: an unquoted expression with spaces.
func exprArgErr(d *caddyfile.Dispenser, what string, args []string) error {
	if len(args) > 2 {
		return d.Errf("%s %s: the expression is %d tokens; quote it: %s %s \"%s\"", what, args[0], len(args)-1, lastWord(what), args[0], strings.Join(args[1:], " "))
	}
	return d.Errf("%s takes a name and an expression", what)
}

func lastWord(s string) string {
	if i := strings.LastIndexByte(s, ' '); i >= 0 {
		return s[i+1:]
	}
	return s
}

func intArg(d *caddyfile.Dispenser) (int, error) {
	opt := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	n, err := parsePositiveInt(v)
	if err != nil {
		return 0, d.Errf("%s: %v", opt, err)
	}
	return n, nil
}

func parsePositiveInt(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive whole number", v)
	}
	return n, nil
}

func durationArg(d *caddyfile.Dispenser) (time.Duration, error) {
	opt := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s %q: expected a positive duration such as 10s, 5m or 72h", opt, v)
	}
	return dur, nil
}

// adaptReplacer stands in for the load-time replacer when the Caddyfile is
// adapted: environment variables may not be set where `caddy adapt` runs,
// so {env.*} becomes a neutral value that keeps URLs and headers checkable.
func adaptReplacer() *caddy.Replacer {
	repl := caddy.NewEmptyReplacer()
	repl.Map(func(key string) (any, bool) {
		if strings.HasPrefix(key, "env.") {
			return "env", true
		}
		return nil, false
	})
	return repl
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
