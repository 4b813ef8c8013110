package callhook

import (
	"fmt"
	"io"
	"strings"

	"github.com/callhook/caddy-callhook/module/intake"
	"github.com/callhook/caddy-callhook/module/mapping"
	"github.com/callhook/caddy-callhook/module/render"
)

// replyPreview is a rendered reply.
type replyPreview struct {
	Status  int          `json:"status"`
	Headers []headerView `json:"headers"`
	Body    string       `json:"body"`
}

// previewReply renders the event's reply as the caller gets it when no
// sync webhook answered: the fallback every reply must have.
func previewReply(h *Handler, rp *render.Reply, ev *intake.Event) renderResult {
	res := renderResult{Target: h.Target, Event: ev.Name, Headers: []headerView{}, Reply: &replyPreview{Headers: []headerView{}}}
	env := &mapping.ReplyEnv{Call: ev.Call, Data: ev.Data, Event: ev.Name, Target: h.Target, Request: &ev.Request, Sync: map[string]any{}}
	for _, hook := range h.hooks {
		if hook.Sync() && hook.Fires(ev.Name) {
			env.Sync[hook.Name()] = nil
		}
	}
	a, err := rp.Render(env)
	if err != nil {
		res.Error = err.Error() + "; the caller would get 500"
		return res
	}
	res.Reply.Status, res.Reply.Body = a.Status, string(a.Body)
	for _, kv := range a.Header {
		res.Reply.Headers = append(res.Reply.Headers, headerView{Name: kv[0], Value: kv[1]})
	}
	res.Reply.Headers = append(res.Reply.Headers, headerView{Name: "Cache-Control", Value: "no-store"})
	return res
}

// printReply prints a reply preview in render's text output.
func printReply(w io.Writer, r renderResult) {
	fmt.Fprintf(w, "\n# reply to the caller (target %s, event %s", r.Target, r.Event)
	if r.Sample != "" {
		fmt.Fprintf(w, "; sample with %s", r.Sample)
	}
	fmt.Fprint(w, "), when no sync webhook answers (every sync.<name> nil)")
	if r.Error != "" {
		fmt.Fprintf(w, ": NOT RENDERED\n# error: %s\n", strings.ReplaceAll(r.Error, "\n", "\n# "))
		return
	}
	fmt.Fprintf(w, "\nHTTP %d\n", r.Reply.Status)
	for _, h := range r.Reply.Headers {
		fmt.Fprintf(w, "%s: %s\n", h.Name, h.Value)
	}
	if r.Reply.Body != "" {
		fmt.Fprintf(w, "\n%s\n", r.Reply.Body)
	}
}
