package callhook

import (
	"context"
	"strings"
)

// replayPreviewData is the page that confirms a replay: what will be sent
// again, and that it goes out under new IDs.
type replayPreviewData struct {
	E eventView
	// Webhooks are the running config's webhooks for the event's name and
	// target (a `when` may still skip some), "target/name".
	Webhooks []string
	// Before is how many deliveries the event has now.
	Before int
}

// replayPreview is what a replay of an event would queue: the webhooks of
// the config in force now that listen for it (sync ones are not queued).
func (s *adminService) replayPreview(ctx context.Context, id string) (replayPreviewData, error) {
	ev, ds, err := s.event(ctx, id)
	if err != nil {
		return replayPreviewData{}, err
	}
	data := replayPreviewData{E: viewEvent(ev, nil), Before: len(ds)}
	e, _, err := s.engine()
	if err != nil {
		return replayPreviewData{}, err
	}
	for _, h := range e.current().handlers(ev.Target) {
		for _, w := range h.hooks {
			if w.Fires(ev.Name) && !w.Sync() {
				data.Webhooks = append(data.Webhooks, ev.Target+"/"+w.Name())
			}
		}
	}
	return data, nil
}

// webhookList is names for a sentence: "a, b and c".
func webhookList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
