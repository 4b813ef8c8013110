package callhook

// sampleEvents are realistic bodies of each canonical event, as a PBX sends
// it at that point of a call: before the call there is no duration or end
// time yet, a hidden number comes as "anonymous", an unanswered outgoing call
// lasts 0 seconds. `caddy callhook render` runs every webhook on them when no
// --data is given, so an expression that breaks on ordinary input (a nil in
// arithmetic, e164 of "anonymous") shows up before the first real call.
//
// The last sample of each event is bareSample: only the call_id, which is
// all a PBX must send. An expression that needs an optional field
// (e164(call.caller) with no caller) fails there, as it would on such a
// call, and render names the param.
var sampleEvents = withBare(map[string][]string{
	"before_call": {`{"call_id":"sample-1","direction":"incoming","insertion_type":"dynamic",` +
		`"caller":"anonymous","callee":"+380441234567","tracking_number":"+380447654321","pool_name":"ads",` +
		`"start_time":"2026-11-25T10:00:00Z","utm_source":"google","landing_page":"https://shop.example.com/"}`},
	"call_answered": {`{"call_id":"sample-1","direction":"incoming","caller":"+380501234567","callee":"+380441234567",` +
		`"start_time":"2026-11-25T10:00:00Z","answer_time":"2026-11-25T10:00:12Z","wait_time":12,` +
		`"agent_id":"301","agent_name":"Olena","department":"sales"}`},
	"call_forwarding": {`{"call_id":"sample-1","direction":"incoming","caller":"+380501234567","callee":"+380441234567",` +
		`"start_time":"2026-11-25T10:00:00Z","forward_number":"+380671234567"}`},
	"after_call": {`{"call_id":"sample-1","direction":"incoming","insertion_type":"dynamic","caller":"+380501234567",` +
		`"callee":"+380441234567","disposition":"answered","start_time":"2026-11-25T10:00:00Z",` +
		`"answer_time":"2026-11-25T10:00:12Z","end_time":"2026-11-25T10:04:31Z","duration":271,"talk_time":259,` +
		`"wait_time":12,"recording_url":"https://pbx.example.com/rec/sample-1.mp3","has_recording":true,` +
		`"first_call":true,"agent_id":"301","agent_name":"Olena","tags":["vip"]}`,
		// a missed call from a hidden number: no answer, no duration
		`{"call_id":"sample-3","direction":"incoming","caller":"anonymous","callee":"+380441234567",` +
			`"disposition":"no_answer","start_time":"2026-11-25T12:00:00Z","end_time":"2026-11-25T12:00:20Z"}`},
	"after_call_rating": {`{"call_id":"sample-1","direction":"incoming","caller":"+380501234567",` +
		`"rating_category":"quality","rating_value":5,"note":"polite"}`},
	"before_outgoing_call": {`{"call_id":"sample-2","direction":"outgoing","caller":"301","callee":"+380501234567",` +
		`"start_time":"2026-11-25T11:00:00Z","agent_id":"301","agent_name":"Olena"}`},
	"after_outgoing_call": {`{"call_id":"sample-2","direction":"outgoing","caller":"301","callee":"+380501234567",` +
		`"disposition":"no_answer","start_time":"2026-11-25T11:00:00Z","end_time":"2026-11-25T11:00:30Z",` +
		`"duration":0,"talk_time":0,"agent_id":"301"}`},
})

// bareSample is an event with every optional field missing.
const bareSample = `{"call_id":"sample-bare"}`

func withBare(m map[string][]string) map[string][]string {
	for ev, bodies := range m {
		m[ev] = append(bodies, bareSample)
	}
	return m
}
