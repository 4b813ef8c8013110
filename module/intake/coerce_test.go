package intake

import (
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// decodeField decodes {"call_id":"c", name: raw} and returns the field.
func decodeField(t *testing.T, name, raw string, opts Options) (any, error) {
	t.Helper()
	ev, err := Decode(newReq("POST", "/after_call", ctJSON, `{"call_id":"c","`+name+`":`+raw+`}`), opts)
	if err != nil {
		return nil, err
	}
	return callField(t, ev.Call, name), nil
}

// decodeFormField sends name=value as a form and returns the field.
func decodeFormField(t *testing.T, name, value string, opts Options) (any, error) {
	t.Helper()
	form := url.Values{"call_id": {"c"}, name: {value}}
	ev, err := Decode(newReq("POST", "/after_call", ctForm, form.Encode()), opts)
	if err != nil {
		return nil, err
	}
	return callField(t, ev.Call, name), nil
}

func TestCoerceJSON(t *testing.T) {
	msk := time.FixedZone("MSK", 3*3600)
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		field string
		raw   string // JSON text
		want  any    // nil: field stays nil
		err   string // substring of a 422 message
		loc   *time.Location
	}{
		// strings
		{field: "caller", raw: `"+79990001122"`, want: "+79990001122"},
		{field: "caller", raw: `""`, want: ""},
		{field: "caller", raw: `"  spaced  "`, want: "  spaced  "},
		{field: "caller", raw: `null`, want: nil},
		{field: "caller", raw: `79990001122`, want: "79990001122"},
		{field: "caller", raw: `-5`, want: "-5"},
		{field: "caller", raw: `12.0`, want: "12"},
		{field: "caller", raw: `12.50`, want: "12.5"},
		{field: "caller", raw: `1e21`, want: "1000000000000000000000"},
		{field: "caller", raw: `true`, want: "true"},
		{field: "note", raw: `false`, want: "false"},
		{field: "caller", raw: `{}`, err: "field caller: got an object"},
		{field: "caller", raw: `[]`, err: "field caller: got a list"},
		{field: "call_id", raw: `"  abc  "`, want: "abc"},
		{field: "call_id", raw: `42`, want: "42"},
		{field: "call_id", raw: `4.5`, want: "4.5"},

		// whole seconds
		{field: "duration", raw: `42`, want: int64(42)},
		{field: "duration", raw: `"42"`, want: int64(42)},
		{field: "duration", raw: `" 42 "`, want: int64(42)},
		{field: "duration", raw: `"+42"`, want: int64(42)},
		{field: "duration", raw: `-3`, want: int64(-3)},
		{field: "duration", raw: `12.0`, want: int64(12)},
		{field: "duration", raw: `"12.0"`, want: int64(12)},
		{field: "duration", raw: `"1e3"`, want: int64(1000)},
		{field: "talk_time", raw: `0`, want: int64(0)},
		{field: "wait_time", raw: `""`, want: nil},
		{field: "wait_time", raw: `"   "`, want: nil},
		{field: "wait_time", raw: `null`, want: nil},
		{field: "duration", raw: `9223372036854775807`, want: int64(9223372036854775807)},
		{field: "duration", raw: `"abc"`, err: `field duration: "abc" is not a whole number of seconds`},
		{field: "duration", raw: `"12.5"`, err: `"12.5" is not a whole number`},
		{field: "duration", raw: `"0x10"`, err: `"0x10" is not a whole number`},
		{field: "duration", raw: `true`, err: "true is not a whole number"},
		{field: "duration", raw: `[1]`, err: "a list is not a whole number"},
		{field: "duration", raw: `9223372036854775808`, err: "is not a whole number"},

		// float
		{field: "rating_value", raw: `4.5`, want: 4.5},
		{field: "rating_value", raw: `5`, want: float64(5)},
		{field: "rating_value", raw: `"4.5"`, want: 4.5},
		{field: "rating_value", raw: `" -0.25 "`, want: -0.25},
		{field: "rating_value", raw: `""`, want: nil},
		{field: "rating_value", raw: `"NaN"`, err: `"NaN" is not a number`},
		{field: "rating_value", raw: `"1e400"`, err: `"1e400" is not a number`},
		{field: "rating_value", raw: `false`, err: "false is not a number"},

		// bools
		{field: "has_recording", raw: `true`, want: true},
		{field: "has_recording", raw: `false`, want: false},
		{field: "has_recording", raw: `1`, want: true},
		{field: "has_recording", raw: `0`, want: false},
		{field: "has_recording", raw: `1.0`, want: true},
		{field: "first_call", raw: `"TRUE"`, want: true},
		{field: "first_call", raw: `"False"`, want: false},
		{field: "first_call", raw: `"1"`, want: true},
		{field: "first_call", raw: `"0"`, want: false},
		{field: "first_call", raw: `"Yes"`, want: true},
		{field: "first_call", raw: `" no "`, want: false},
		{field: "first_call", raw: `""`, want: nil},
		{field: "first_call", raw: `"maybe"`, err: `field first_call: "maybe" is not a boolean`},
		{field: "first_call", raw: `2`, err: "2 is not a boolean"},
		{field: "first_call", raw: `"2"`, err: `"2" is not a boolean`},

		// times
		{field: "start_time", raw: `"2024-05-01T10:00:00Z"`, want: utc("2024-05-01T10:00:00Z")},
		{field: "start_time", raw: `"2024-05-01T10:00:00.123456789Z"`, want: utc("2024-05-01T10:00:00.123456789Z")},
		{field: "start_time", raw: `"2024-05-01T13:00:00+03:00"`, want: utc("2024-05-01T10:00:00Z")},
		{field: "start_time", raw: `"2024-05-01T13:00:00.5+03:00"`, want: utc("2024-05-01T10:00:00.5Z")},
		{field: "start_time", raw: `"2024-05-01 13:00:00+03:00"`, want: utc("2024-05-01T10:00:00Z")},
		{field: "start_time", raw: `"2024-05-01 10:00:00"`, want: utc("2024-05-01T10:00:00Z")},
		{field: "start_time", raw: `"2024-05-01 13:00:00"`, want: utc("2024-05-01T10:00:00Z"), loc: msk},
		{field: "start_time", raw: `"2024-05-01T13:00:00"`, want: utc("2024-05-01T10:00:00Z"), loc: msk},
		{field: "start_time", raw: `"2024-05-01 13:00:00.250"`, want: utc("2024-05-01T10:00:00.25Z"), loc: msk},
		{field: "start_time", raw: `"2024-05-01T13:00:00Z"`, want: utc("2024-05-01T13:00:00Z"), loc: msk}, // a zone wins over loc
		{field: "answer_time", raw: `1714557600`, want: utc("2024-05-01T10:00:00Z")},
		{field: "answer_time", raw: `1714557600`, want: utc("2024-05-01T10:00:00Z"), loc: msk}, // Unix time has no zone to apply
		{field: "answer_time", raw: `"1714557600"`, want: utc("2024-05-01T10:00:00Z")},
		{field: "answer_time", raw: `1714557600.25`, want: utc("2024-05-01T10:00:00.25Z")},
		{field: "answer_time", raw: `"1714557600.25"`, want: utc("2024-05-01T10:00:00.25Z")},
		{field: "answer_time", raw: `1714557600123`, want: utc("2024-05-01T10:00:00.123Z")},
		{field: "answer_time", raw: `"1714557600123"`, want: utc("2024-05-01T10:00:00.123Z")},
		{field: "answer_time", raw: `1714557600123.5`, want: utc("2024-05-01T10:00:00.1235Z")},
		{field: "answer_time", raw: `100000000000`, want: utc("5138-11-16T09:46:40Z")},     // 1e11 is still seconds
		{field: "answer_time", raw: `100000000001`, want: utc("1973-03-03T09:46:40.001Z")}, // above 1e11 is milliseconds
		{field: "answer_time", raw: `253402300799999`, want: utc("9999-12-31T23:59:59.999Z")},
		{field: "answer_time", raw: `-86400`, want: utc("1969-12-31T00:00:00Z")},
		{field: "end_time", raw: `""`, want: nil},
		{field: "end_time", raw: `null`, want: nil},
		{field: "end_time", raw: `0`, want: nil},
		{field: "end_time", raw: `"0"`, want: nil},
		{field: "end_time", raw: `"0000-00-00 00:00:00"`, want: nil},
		{field: "end_time", raw: `"yesterday"`, err: `field end_time: "yesterday" is not a time (use RFC 3339, Unix seconds or "2006-01-02 15:04:05")`},
		{field: "end_time", raw: `"2024-05-01"`, err: `"2024-05-01" is not a time`},
		{field: "end_time", raw: `"2024-05-01T10:00:00+25:00"`, err: "is not a time"},
		{field: "end_time", raw: `"2024-05-01 10:00:00 garbage"`, err: "is not a time"},
		{field: "end_time", raw: `"01.05.2024 10:00:00"`, err: "is not a time"},
		{field: "end_time", raw: `"Inf"`, err: "is not a time"},
		{field: "end_time", raw: `{}`, err: "an object is not a time"},

		// enums
		{field: "direction", raw: `"incoming"`, want: "incoming"},
		{field: "direction", raw: `"OUTGOING"`, want: "outgoing"},
		{field: "direction", raw: `" Callback "`, want: "callback"},
		{field: "direction", raw: `""`, want: nil},
		{field: "insertion_type", raw: `"Static"`, want: "static"},
		{field: "insertion_type", raw: `"dynamic"`, want: "dynamic"},
		{field: "disposition", raw: `"answered"`, want: "answered"},
		{field: "disposition", raw: `"no_answer"`, want: "no_answer"},
		{field: "disposition", raw: `"no-answer"`, want: "no_answer"},
		{field: "disposition", raw: `"noanswer"`, want: "no_answer"},
		{field: "disposition", raw: `"NO ANSWER"`, want: "no_answer"},
		{field: "disposition", raw: `"NOANSWER"`, want: "no_answer"},
		{field: "disposition", raw: `"Busy"`, want: "busy"},
		{field: "disposition", raw: `"VoiceMail"`, want: "voicemail"},
		{field: "disposition", raw: `"FAILED"`, want: "failed"},
		{field: "disposition", raw: `"no answer yet"`, err: `field disposition: "no answer yet" is not allowed (use one of answered, no_answer, busy, failed, voicemail)`},
		{field: "direction", raw: `"inbound"`, err: `field direction: "inbound" is not allowed (use one of incoming, outgoing, callback)`},
		{field: "direction", raw: `true`, err: "got true, expected one of incoming, outgoing, callback"},

		// tags
		{field: "tags", raw: `["a","b"]`, want: []string{"a", "b"}},
		{field: "tags", raw: `[" a ","",7,1.5]`, want: []string{"a", "7", "1.5"}},
		{field: "tags", raw: `"a, b ,,c"`, want: []string{"a", "b", "c"}},
		{field: "tags", raw: `"single"`, want: []string{"single"}},
		{field: "tags", raw: `5`, want: []string{"5"}},
		{field: "tags", raw: `""`, want: nil},
		{field: "tags", raw: `" , "`, want: nil},
		{field: "tags", raw: `[]`, want: nil},
		{field: "tags", raw: `null`, want: nil},
		{field: "tags", raw: `["a",null]`, err: "field tags: entry 2 is null; tags must be strings or numbers"},
		{field: "tags", raw: `[true]`, err: "entry 1 is true"},
		{field: "tags", raw: `[["a"]]`, err: "entry 1 is a list"},
	}
	for _, tt := range tests {
		name := tt.field + " " + tt.raw
		if tt.loc != nil {
			name += " in " + tt.loc.String()
		}
		t.Run(name, func(t *testing.T) {
			got, err := decodeField(t, tt.field, tt.raw, Options{Location: tt.loc})
			if tt.err != "" {
				if err == nil {
					t.Fatalf("no error, got %#v", got)
				}
				e := asError(t, err)
				if e.Status != 422 || !strings.Contains(e.Msg, tt.err) {
					t.Fatalf("got %d %q\nwant 422 containing %q", e.Status, e.Msg, tt.err)
				}
				checkMessage(t, e.Msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if wt, ok := tt.want.(time.Time); ok {
				gt, ok := got.(time.Time)
				if !ok || !gt.Equal(wt) {
					t.Fatalf("got %v, want %v", got, wt)
				}
				if _, err := json.Marshal(gt); err != nil {
					t.Fatalf("time does not encode: %v", err)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v (%T), want %#v (%T)", got, got, tt.want, tt.want)
			}
		})
	}
}

func TestCoerceTimeLocation(t *testing.T) {
	msk := time.FixedZone("MSK", 3*3600)
	for _, tc := range []struct {
		raw, wantZone string
		loc           *time.Location
		offset        int
	}{
		{`"2024-05-01 13:00:00"`, "UTC", nil, 0},
		{`"2024-05-01 13:00:00"`, "MSK", msk, 3 * 3600},
		{`"2024-05-01T13:00:00-05:00"`, "", msk, -5 * 3600},
		{`1714557600`, "UTC", msk, 0},
	} {
		got, err := decodeField(t, "start_time", tc.raw, Options{Location: tc.loc})
		if err != nil {
			t.Fatal(err)
		}
		zone, off := got.(time.Time).Zone()
		if off != tc.offset || (tc.wantZone != "" && zone != tc.wantZone) {
			t.Errorf("%s in %v: zone %s %d, want %s %d", tc.raw, tc.loc, zone, off, tc.wantZone, tc.offset)
		}
	}
}

func TestCoerceForm(t *testing.T) {
	tests := []struct {
		field, value string
		want         any
		err          string
	}{
		{"caller", "+1 415", "+1 415", ""},
		{"caller", "", "", ""},
		{"duration", "17", int64(17), ""},
		{"duration", "", nil, ""},
		{"duration", "17s", nil, `field duration: "17s" is not a whole number of seconds`},
		{"rating_value", "3.5", 3.5, ""},
		{"has_recording", "yes", true, ""},
		{"has_recording", "", nil, ""},
		{"start_time", "2024-05-01 10:00:00", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), ""},
		{"start_time", "1714557600", time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), ""},
		{"start_time", "", nil, ""},
		{"disposition", "NO ANSWER", "no_answer", ""},
		{"disposition", "", nil, ""},
		{"tags", "vip, repeat", []string{"vip", "repeat"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.field+"="+tt.value, func(t *testing.T) {
			got, err := decodeFormField(t, tt.field, tt.value, Options{})
			if tt.err != "" {
				if e := asError(t, err); e.Status != 422 || !strings.Contains(e.Msg, tt.err) {
					t.Fatalf("got %d %q", e.Status, e.Msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if wt, ok := tt.want.(time.Time); ok {
				if gt, ok := got.(time.Time); !ok || !gt.Equal(wt) {
					t.Fatalf("got %v, want %v", got, wt)
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}

	t.Run("repeated tags keys", func(t *testing.T) {
		for _, q := range []string{"call_id=1&tags=a&tags=b+c&tags=", "call_id=1&tags=a&tags=b%20c"} {
			ev, err := Decode(newReq("GET", "/after_call?"+q, "", ""), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ev.Call.Tags, []string{"a", "b c"}) {
				t.Errorf("%s: tags %q", q, ev.Call.Tags)
			}
		}
	})
}

// TestEveryField sets every canonical field at once and checks each value
// lands in its own struct field: it guards the offset table.
func TestEveryField(t *testing.T) {
	body := map[string]any{}
	want := map[string]any{}
	for i, name := range FieldNames() {
		f := fields.byName[name]
		switch f.kind {
		case kindID, kindString:
			body[name] = "v-" + name
			want[name] = "v-" + name
		case kindEnum:
			v := strings.Split(f.enum.allowed, ", ")[i%2]
			body[name] = strings.ToUpper(v)
			want[name] = v
		case kindInt:
			body[name] = i
			want[name] = int64(i)
		case kindFloat:
			body[name] = float64(i) + 0.5
			want[name] = float64(i) + 0.5
		case kindBool:
			body[name] = i%2 == 0
			want[name] = i%2 == 0
		case kindTime:
			tm := time.Date(2024, 1, 1, 0, 0, i, 0, time.UTC)
			body[name] = tm.Format(time.RFC3339)
			want[name] = tm
		case kindTags:
			body[name] = []string{name, "x"}
			want[name] = []string{name, "x"}
		default:
			t.Fatalf("field %s has no test value", name)
		}
	}
	raw, _ := json.Marshal(body)
	ev, err := Decode(newReq("POST", "/after_call", ctJSON, string(raw)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range FieldNames() {
		got := callField(t, ev.Call, name)
		if wt, ok := want[name].(time.Time); ok {
			if !got.(time.Time).Equal(wt) {
				t.Errorf("%s: got %v, want %v", name, got, wt)
			}
			continue
		}
		if !reflect.DeepEqual(got, want[name]) {
			t.Errorf("%s: got %#v, want %#v", name, got, want[name])
		}
	}
	// The Call must encode: it is stored and rendered downstream.
	if _, err := json.Marshal(ev.Call); err != nil {
		t.Fatal(err)
	}
	// Pointers are distinct: changing one value leaves the others alone.
	*ev.Call.Caller = "changed"
	if *ev.Call.Callee != "v-callee" {
		t.Error("caller and callee share storage")
	}
}

func TestFieldNames(t *testing.T) {
	var want []string
	rt := reflect.TypeFor[Call]()
	for i := range rt.NumField() {
		want = append(want, rt.Field(i).Tag.Get("expr"))
	}
	got := FieldNames()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FieldNames()\n got %q\nwant %q", got, want)
	}
	got[0] = "mutated"
	if FieldNames()[0] != want[0] {
		t.Error("FieldNames returns its internal slice")
	}
	for _, n := range want {
		if !IsField(n) {
			t.Errorf("IsField(%q) = false", n)
		}
	}
	for _, n := range []string{"", "event", "Call_ID", "token", "CallID"} {
		if IsField(n) {
			t.Errorf("IsField(%q) = true", n)
		}
	}
}

func TestDescribeAndQuote(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{nil, "null"},
		{"a\xffb", `"a\xffb"`},
		{int64(-3), "-3"},
		{2.5, "2.5"},
		{true, "true"},
		{map[string]any{}, "an object"},
		{[]any{}, "a list"},
		{struct{}{}, "a value of type struct {}"},
		{strings.Repeat("é", 40), `"` + strings.Repeat("é", 32) + `"…`},
	} {
		if got := describe(tc.v); got != tc.want {
			t.Errorf("describe(%#v) = %s, want %s", tc.v, got, tc.want)
		}
	}
}
