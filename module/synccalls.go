package callhook

import (
	"strings"

	"github.com/callhook/caddy-callhook/module/queue"
)

// syncCallMark follows "webhook NAME" in the LastError of every failed
// sync call as recorded ("webhook crm: sync call failed (not retried):
// http 502"). It tells those records apart from queued deliveries without
// a field in the queue's records; no other reason starts so.
const syncCallMark = ": sync call "

// isSyncCall reports whether d is the record of a sync webhook's call
// that failed: shown apart from the dead deliveries, and never retried,
// since it asked something for a call that is over by now.
func isSyncCall(d *queue.Delivery) bool {
	return strings.HasPrefix(d.LastError, "webhook "+d.Webhook+syncCallMark)
}

// errSyncCallRetry is why retrying a sync call is refused.
func errSyncCallRetry(d *queue.Delivery) error {
	return conflict("delivery %s is a call of sync webhook %s, made once while the caller waited for its answer; it is not retried, since the call it was for is over (it is kept for the webhook's figures and the record of the call)", d.ID, d.Webhook)
}
