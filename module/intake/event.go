// Package intake turns an incoming call-event HTTP request into an Event:
// content types, decoding, coercion of canonical fields, and errors that carry
// the HTTP status to answer with. It knows nothing of Caddy.
package intake

import "time"

// Canonical event names (SPEC §3).
var EventNames = []string{
	"before_call",
	"call_answered",
	"call_forwarding",
	"after_call",
	"after_call_rating",
	"before_outgoing_call",
	"after_outgoing_call",
}

// IsEventName reports whether name is a canonical event name.
func IsEventName(name string) bool {
	for _, n := range EventNames {
		if n == name {
			return true
		}
	}
	return false
}

// Call holds the canonical call fields, typed. A field absent from the event
// is nil, so expressions can write `call.utm_source ?? 'direct'`. The expr
// tags are the names used in expressions and in incoming bodies.
type Call struct {
	CallID         *string    `expr:"call_id" json:"call_id,omitempty"`
	Direction      *string    `expr:"direction" json:"direction,omitempty"`           // incoming|outgoing|callback
	InsertionType  *string    `expr:"insertion_type" json:"insertion_type,omitempty"` // dynamic|static|callback
	Caller         *string    `expr:"caller" json:"caller,omitempty"`
	Callee         *string    `expr:"callee" json:"callee,omitempty"`
	TrackingNumber *string    `expr:"tracking_number" json:"tracking_number,omitempty"`
	PoolName       *string    `expr:"pool_name" json:"pool_name,omitempty"`
	Disposition    *string    `expr:"disposition" json:"disposition,omitempty"` // answered|no_answer|busy|failed|voicemail
	StartTime      *time.Time `expr:"start_time" json:"start_time,omitempty"`
	AnswerTime     *time.Time `expr:"answer_time" json:"answer_time,omitempty"`
	EndTime        *time.Time `expr:"end_time" json:"end_time,omitempty"`
	Duration       *int64     `expr:"duration" json:"duration,omitempty"` // seconds
	TalkTime       *int64     `expr:"talk_time" json:"talk_time,omitempty"`
	WaitTime       *int64     `expr:"wait_time" json:"wait_time,omitempty"`
	RecordingURL   *string    `expr:"recording_url" json:"recording_url,omitempty"`
	HasRecording   *bool      `expr:"has_recording" json:"has_recording,omitempty"`
	FirstCall      *bool      `expr:"first_call" json:"first_call,omitempty"`
	Region         *string    `expr:"region" json:"region,omitempty"`
	City           *string    `expr:"city" json:"city,omitempty"`
	Country        *string    `expr:"country" json:"country,omitempty"`
	RemoteIP       *string    `expr:"remote_ip" json:"remote_ip,omitempty"`
	KeyPhrase      *string    `expr:"key_phrase" json:"key_phrase,omitempty"`
	UTMSource      *string    `expr:"utm_source" json:"utm_source,omitempty"`
	UTMMedium      *string    `expr:"utm_medium" json:"utm_medium,omitempty"`
	UTMCampaign    *string    `expr:"utm_campaign" json:"utm_campaign,omitempty"`
	UTMContent     *string    `expr:"utm_content" json:"utm_content,omitempty"`
	UTMTerm        *string    `expr:"utm_term" json:"utm_term,omitempty"`
	LandingPage    *string    `expr:"landing_page" json:"landing_page,omitempty"`
	Referrer       *string    `expr:"referrer" json:"referrer,omitempty"`
	ClientID       *string    `expr:"client_id" json:"client_id,omitempty"`
	VisitorUUID    *string    `expr:"visitor_uuid" json:"visitor_uuid,omitempty"`
	AgentID        *string    `expr:"agent_id" json:"agent_id,omitempty"`
	AgentName      *string    `expr:"agent_name" json:"agent_name,omitempty"`
	Department     *string    `expr:"department" json:"department,omitempty"`
	ForwardNumber  *string    `expr:"forward_number" json:"forward_number,omitempty"`
	RatingCategory *string    `expr:"rating_category" json:"rating_category,omitempty"`
	RatingValue    *float64   `expr:"rating_value" json:"rating_value,omitempty"`
	Tags           []string   `expr:"tags" json:"tags,omitempty"`
	Note           *string    `expr:"note" json:"note,omitempty"`
}

// RequestInfo is what expressions see of the incoming request as `request`.
type RequestInfo struct {
	Method   string            `expr:"method"`
	Path     string            `expr:"path"`
	RemoteIP string            `expr:"remote_ip"`
	Headers  map[string]string `expr:"headers"` // lower-case names; repeated values joined with ", "
	Query    map[string]string `expr:"query"`   // first value of each key
}

// Event is one decoded, coerced call event.
type Event struct {
	Name       string
	CallID     string
	Call       *Call
	Data       map[string]any // the whole decoded body
	Request    RequestInfo
	ReceivedAt time.Time
}
