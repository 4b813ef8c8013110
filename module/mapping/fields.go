package mapping

import (
	"fmt"
	"sort"
	"strings"
)

// Field is one `field <canonical> <expression>` mapping: a PBX's own body
// field names mapped onto a canonical call field.
type Field struct {
	Name string
	Prog *Program
}

// Fields is the ordered set of a handler's field mappings.
type Fields []Field

// Remap evaluates every mapping over the decoded body. A mapping that yields
// nil leaves the body's own canonical field (if any) in place.
func (fs Fields) Remap(data map[string]any) (map[string]any, error) {
	if len(fs) == 0 {
		return nil, nil
	}
	env := FieldEnv{Data: data}
	out := make(map[string]any, len(fs))
	for _, f := range fs {
		v, err := f.Prog.Run(env)
		if err != nil {
			return nil, fmt.Errorf("field %s: %v", f.Name, err)
		}
		if v = Normalize(v); v != nil {
			out[f.Name] = v
		}
	}
	return out, nil
}

// presets are ready sets of `field` mappings for known sources (`input`).
// Each is a best-effort mapping of the vendor's documented webhook fields;
// a `field` line in the handler overrides any of them.
var presets = map[string][][2]string{
	"canonical": nil,
	"twilio": {
		{"call_id", "data.CallSid"},
		{"caller", "data.From"},
		{"callee", "data.To"},
		{"direction", "data.Direction == nil ? nil : (string(data.Direction) startsWith 'inbound' ? 'incoming' : 'outgoing')"},
		{"disposition", "data.CallStatus == nil ? nil : {'completed': 'answered', 'busy': 'busy', 'no-answer': 'no_answer', 'failed': 'failed', 'canceled': 'no_answer'}[string(data.CallStatus)]"},
		{"duration", "data.CallDuration"},
		{"recording_url", "data.RecordingUrl"},
		{"has_recording", "data.RecordingUrl == nil ? nil : true"},
		{"city", "data.FromCity"},
		{"region", "data.FromState"},
		{"country", "data.FromCountry"},
		{"forward_number", "data.ForwardedFrom"},
	},
	"zadarma": {
		{"call_id", "data.pbx_call_id"},
		{"caller", "data.caller_id"},
		{"callee", "data.called_did ?? data.destination"},
		{"tracking_number", "data.called_did"},
		{"start_time", "data.call_start"},
		{"duration", "data.duration"},
		{"disposition", "data.disposition == nil ? nil : {'answered': 'answered', 'busy': 'busy', 'no answer': 'no_answer', 'cancel': 'no_answer', 'failed': 'failed', 'no money': 'failed', 'line limit': 'failed'}[lower(string(data.disposition))]"},
		{"has_recording", "data.is_recorded"},
		{"agent_id", "data.internal"},
		{"direction", "data.event == nil ? nil : (string(data.event) startsWith 'NOTIFY_OUT' ? 'outgoing' : 'incoming')"},
	},
	"binotel": {
		{"call_id", "data['callDetails[generalCallID]'] ?? data.generalCallID"},
		{"caller", "data['callDetails[externalNumber]'] ?? data.externalNumber"},
		{"tracking_number", "data['callDetails[pbxNumberData][number]'] ?? data.pbxNumber"},
		{"agent_id", "data['callDetails[internalNumber]'] ?? data.internalNumber"},
		{"agent_name", "data['callDetails[employeeData][name]']"},
		{"start_time", "data['callDetails[startTime]'] ?? data.startTime"},
		{"talk_time", "data['callDetails[billsec]'] ?? data.billsec"},
		{"wait_time", "data['callDetails[waitsec]'] ?? data.waitsec"},
		{"direction", "let t = data['callDetails[callType]'] ?? data.callType; t == nil ? nil : (string(t) == '1' ? 'outgoing' : 'incoming')"},
		{"disposition", "let d = data['callDetails[disposition]'] ?? data.disposition; d == nil ? nil : {'ANSWER': 'answered', 'TRANSFER': 'answered', 'BUSY': 'busy', 'NOANSWER': 'no_answer', 'CANCEL': 'no_answer', 'CONGESTION': 'failed', 'CHANUNAVAIL': 'failed', 'VM': 'voicemail', 'VM-SUCCESS': 'voicemail'}[upper(string(d))]"},
	},
	"ringostat": {
		{"call_id", "data.uniqueid"},
		{"caller", "data.caller"},
		{"callee", "data.dst"},
		{"start_time", "data.calldate"},
		{"duration", "data.duration"},
		{"talk_time", "data.billsec"},
		{"recording_url", "data.recording"},
		{"disposition", "data.disposition == nil ? nil : {'ANSWERED': 'answered', 'NO ANSWER': 'no_answer', 'BUSY': 'busy', 'FAILED': 'failed'}[upper(string(data.disposition))]"},
		{"direction", "data.call_type == nil ? nil : {'in': 'incoming', 'out': 'outgoing', 'callback': 'callback'}[lower(string(data.call_type))]"},
		{"pool_name", "data.pool_name"},
		{"utm_source", "data.utm_source"},
		{"utm_medium", "data.utm_medium"},
		{"utm_campaign", "data.utm_campaign"},
		{"utm_content", "data.utm_content"},
		{"utm_term", "data.utm_term"},
	},
	"callrail": {
		{"call_id", "data.resource_id ?? data.id"},
		{"caller", "data.customer_phone_number"},
		{"callee", "data.business_phone_number"},
		{"tracking_number", "data.tracking_phone_number"},
		{"start_time", "data.start_time"},
		{"duration", "data.duration"},
		{"direction", "data.direction == nil ? nil : (lower(string(data.direction)) == 'outbound' ? 'outgoing' : 'incoming')"},
		{"disposition", "data.answered == nil ? nil : (data.answered == true ? 'answered' : 'no_answer')"},
		{"recording_url", "data.recording"},
		{"first_call", "data.first_call"},
		{"city", "data.customer_city"},
		{"region", "data.customer_state"},
		{"country", "data.customer_country"},
		{"landing_page", "data.landing_page_url"},
		{"referrer", "data.referring_url"},
		{"key_phrase", "data.keywords"},
		{"utm_source", "data.utm_source"},
		{"utm_medium", "data.utm_medium"},
		{"utm_campaign", "data.utm_campaign"},
	},
}

// presetEvents map a source's own event names onto canonical ones: an
// expression over `data` yielding the event name, or nil to fall back to
// the usual rules (a body field `event`, the last path segment). The
// handler's `event` setting overrides them.
var presetEvents = map[string]string{
	// Zadarma's notification types (its API documentation, "Notifications").
	"zadarma": `data.event == nil ? nil : {'NOTIFY_START': 'before_call', 'NOTIFY_IVR': 'before_call', 'NOTIFY_ANSWER': 'call_answered', 'NOTIFY_END': 'after_call', 'NOTIFY_OUT_START': 'before_outgoing_call', 'NOTIFY_OUT_END': 'after_outgoing_call'}[string(data.event)]`,
	// Binotel's requestType: the call settings request while it rings, and
	// the completed call.
	"binotel": `data.requestType == nil ? nil : {'apiCallSettings': 'before_call', 'apiCallCompleted': 'after_call'}[string(data.requestType)]`,
	// Twilio's CallStatus: the voice URL is asked while it rings, status
	// callbacks report the rest.
	"twilio": `data.CallStatus == nil ? nil : {'ringing': 'before_call', 'in-progress': 'call_answered', 'completed': 'after_call', 'busy': 'after_call', 'no-answer': 'after_call', 'failed': 'after_call', 'canceled': 'after_call'}[string(data.CallStatus)]`,
}

// PresetEvent returns the event-name expression of an `input` preset, or
// "" when the preset has none.
func PresetEvent(name string) string { return presetEvents[name] }

// PresetNames lists the `input` presets.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns the field mappings of an `input` preset, as source text.
func Preset(name string) ([][2]string, error) {
	p, ok := presets[name]
	if !ok {
		return nil, fmt.Errorf("unknown input preset %q: expected one of %s", name, strings.Join(PresetNames(), ", "))
	}
	return p, nil
}
