package intake

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// Coercion of decoded values into Call's typed fields.
//
// Values arrive as decoded from JSON or a form (nil, string, bool, int64,
// float64, []any, map[string]any), or from a field mapping, which may also
// yield time.Time and other Go numbers. Each coerce function returns the
// value, whether there is one (false for null, and for "" in a non-string
// field: PBXs send "" for "no value"), or an error whose message says what is
// wrong with the value; the caller prefixes the field name.

// normalize turns Go values a field mapping may yield into the decoder's
// types. It reports false when v is of no type it knows.
func normalize(v any) (any, bool) {
	switch v := v.(type) {
	case int:
		return int64(v), true
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case uint:
		return uintValue(uint64(v)), true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	case uint64:
		return uintValue(v), true
	case float32:
		return float64(v), true
	case json.Number:
		n, err := number(string(v))
		return n, err == nil
	case []string:
		out := make([]any, len(v))
		for i, s := range v {
			out[i] = s
		}
		return out, true
	case *string:
		if v == nil {
			return nil, true
		}
		return *v, true
	}
	return nil, false
}

// uintValue keeps a uint64 beyond int64 exact as a json.Number, which string
// fields take literally and numeric fields read as float64.
func uintValue(u uint64) any {
	if u > math.MaxInt64 {
		return json.Number(strconv.FormatUint(u, 10))
	}
	return int64(u)
}

// number converts a JSON number literal: integers that fit int64 stay exact,
// everything else becomes float64. Literals beyond float64's range are an
// error (they could not be encoded back to JSON).
func number(s string) (any, error) {
	if isIntLiteral(s) {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n, nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, errors.New("out of range")
	}
	return f, nil
}

// isIntLiteral reports whether s is an optional '-' followed by digits only.
func isIntLiteral(s string) bool {
	if s != "" && s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func formatFloat(f float64) string {
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func finite(f float64) bool { return !math.IsInf(f, 0) && !math.IsNaN(f) }

// coerceString accepts strings as they are, numbers in plain decimal (whole
// numbers without ".0") and booleans as "true"/"false".
func coerceString(v any) (string, bool, error) {
	switch v := v.(type) {
	case nil:
		return "", false, nil
	case string:
		return v, true, nil
	case int64:
		return strconv.FormatInt(v, 10), true, nil
	case float64:
		if !finite(v) {
			return "", false, errors.New(describe(v) + " is not a finite number")
		}
		return formatFloat(v), true, nil
	case json.Number:
		// The exact literal of a whole number too large for int64.
		return string(v), true, nil
	case bool:
		return strconv.FormatBool(v), true, nil
	case time.Time:
		return v.Format(time.RFC3339Nano), true, nil
	case map[string]any:
		return "", false, errors.New("got an object, expected a string or number")
	case []any:
		return "", false, errors.New("got a list, expected a single string or number (send the field once)")
	}
	if n, ok := normalize(v); ok {
		return coerceString(n)
	}
	return "", false, errors.New("got " + describe(v) + ", expected a string or number")
}

// coerceID accepts a string or a number, trimmed; blank means absent.
func coerceID(v any) (string, bool, error) {
	switch v.(type) {
	case bool, map[string]any, []any:
		return "", false, errors.New("got " + describe(v) + ", expected a string or number")
	}
	s, ok, err := coerceString(v)
	if err != nil || !ok {
		return "", false, err
	}
	s = strings.TrimSpace(s)
	return s, s != "", nil
}

// coerceEnum matches a string against the enum's values case-insensitively,
// with '-' and ' ' read as '_'; the stored value is the canonical one.
func coerceEnum(e *enumSpec, v any) (string, bool, error) {
	s, ok := v.(string)
	if !ok {
		if v == nil {
			return "", false, nil
		}
		if n, ok := normalize(v); ok {
			if _, isStr := n.(string); isStr || n == nil {
				return coerceEnum(e, n)
			}
		}
		return "", false, errors.New("got " + describe(v) + ", expected one of " + e.allowed)
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return "", false, nil
	}
	if c, ok := e.values[t]; ok { // fast path: already canonical
		return c, true, nil
	}
	norm := strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == ' ':
			return '_'
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return r
	}, t)
	if c, ok := e.values[norm]; ok {
		return c, true, nil
	}
	return "", false, errors.New(quote(s) + " is not allowed (use one of " + e.allowed + ")")
}

// coerceInt accepts whole numbers of seconds: numbers or numeric strings,
// including integral floats such as 12.0 or "12.0".
func coerceInt(v any) (int64, bool, error) {
	switch x := v.(type) {
	case nil:
		return 0, false, nil
	case int64:
		return x, true, nil
	case float64:
		if n, ok := wholeInt(x); ok {
			return n, true, nil
		}
	case string:
		s := strings.TrimSpace(x)
		if s == "" {
			return 0, false, nil
		}
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n, true, nil
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil && looksNumeric(s) {
			if n, ok := wholeInt(f); ok {
				return n, true, nil
			}
		}
	default:
		if n, ok := normalize(v); ok && n != nil {
			return coerceInt(n)
		}
	}
	return 0, false, errors.New(describe(v) + " is not a whole number of seconds")
}

// wholeInt converts an integral float within int64's range.
func wholeInt(f float64) (int64, bool) {
	if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, false // also NaN and ±Inf
	}
	return int64(f), true
}

// looksNumeric rejects what strconv.ParseFloat accepts but a person would not
// call a number: "NaN", "Inf", "infinity", hexadecimal and underscores.
func looksNumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c == '.', c == '-', c == '+', c == 'e', c == 'E':
		default:
			return false
		}
	}
	return true
}

// coerceFloat accepts finite numbers and numeric strings.
func coerceFloat(v any) (float64, bool, error) {
	switch x := v.(type) {
	case nil:
		return 0, false, nil
	case int64:
		return float64(x), true, nil
	case float64:
		if finite(x) {
			return x, true, nil
		}
	case string:
		s := strings.TrimSpace(x)
		if s == "" {
			return 0, false, nil
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil && finite(f) && looksNumeric(s) {
			return f, true, nil
		}
	default:
		if n, ok := normalize(v); ok && n != nil {
			return coerceFloat(n)
		}
	}
	return 0, false, errors.New(describe(v) + " is not a number")
}

// coerceBool accepts true/false, 1/0 and the strings "true"/"false",
// "1"/"0", "yes"/"no" in any case.
func coerceBool(v any) (bool, bool, error) {
	switch x := v.(type) {
	case nil:
		return false, false, nil
	case bool:
		return x, true, nil
	case int64:
		if x == 0 || x == 1 {
			return x == 1, true, nil
		}
	case float64:
		if x == 0 || x == 1 {
			return x == 1, true, nil
		}
	case string:
		s := strings.TrimSpace(x)
		switch {
		case s == "":
			return false, false, nil
		case s == "1" || strings.EqualFold(s, "true") || strings.EqualFold(s, "yes"):
			return true, true, nil
		case s == "0" || strings.EqualFold(s, "false") || strings.EqualFold(s, "no"):
			return false, true, nil
		}
	default:
		if n, ok := normalize(v); ok && n != nil {
			return coerceBool(n)
		}
	}
	return false, false, errors.New(describe(v) + " is not a boolean (use true/false, 1/0 or yes/no)")
}

// Time ranges: time.Time's JSON encoding only handles years 0 to 9999.
const (
	minUnix = -62167219200 // 0000-01-01T00:00:00Z
	maxUnix = 253402300799 // 9999-12-31T23:59:59Z
	// A Unix number above this is read as milliseconds (1e11 seconds is
	// the year 5138, 1e11 milliseconds is March 1973).
	unixMilliAbove = 1e11
)

const timeForms = `use RFC 3339, Unix seconds or "2006-01-02 15:04:05"`

// coerceTime accepts:
//   - RFC 3339, with or without fractional seconds, with 'T' or ' ' between
//     date and time ("2024-05-01T10:00:00+03:00", "2024-05-01 10:00:00Z");
//   - "2006-01-02 15:04:05" and "2006-01-02T15:04:05" (optionally with
//     fractional seconds) without a zone, read in loc;
//   - Unix time as a number or numeric string: seconds, or milliseconds when
//     the value is above 1e11; fractions are kept to the microsecond;
//   - a time.Time from a field mapping.
//
// "No value" markers are nil: "", 0, "0" and MySQL's zero date
// "0000-00-00 00:00:00" (Asterisk CDRs send it for a call never answered).
// Times from Unix numbers are in UTC; RFC 3339 times keep their offset.
func coerceTime(v any, loc *time.Location) (time.Time, bool, error) {
	switch x := v.(type) {
	case nil:
		return time.Time{}, false, nil
	case int64:
		return unixInt(x)
	case float64:
		return unixFloat(x)
	case time.Time:
		if y := x.Year(); y < 0 || y > 9999 {
			return time.Time{}, false, errors.New(describe(v) + " is out of range (years 0 to 9999)")
		}
		return x, true, nil
	case string:
		s := strings.TrimSpace(x)
		switch s {
		case "", "0", "0000-00-00 00:00:00", "0000-00-00T00:00:00":
			return time.Time{}, false, nil
		}
		if looksNumeric(s) {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return unixInt(n)
			}
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				return unixFloat(f)
			}
		} else if t, ok := parseTime(s, loc); ok {
			return t, true, nil
		}
	default:
		if n, ok := normalize(v); ok && n != nil {
			return coerceTime(n, loc)
		}
	}
	return time.Time{}, false, errors.New(describe(v) + " is not a time (" + timeForms + ")")
}

func unixInt(n int64) (time.Time, bool, error) {
	switch {
	case n == 0:
		return time.Time{}, false, nil
	case n > unixMilliAbove:
		if n/1000 > maxUnix {
			return time.Time{}, false, unixRange(n)
		}
		return time.UnixMilli(n).UTC(), true, nil
	case n < minUnix:
		return time.Time{}, false, unixRange(n)
	}
	return time.Unix(n, 0).UTC(), true, nil
}

func unixFloat(f float64) (time.Time, bool, error) {
	if f == 0 {
		return time.Time{}, false, nil
	}
	if !finite(f) {
		return time.Time{}, false, errors.New(describe(f) + " is not a time (" + timeForms + ")")
	}
	us := f * 1e6
	if f > unixMilliAbove {
		us = f * 1e3
	}
	us = math.Round(us)
	if us < minUnix*1e6 || us > (maxUnix+1)*1e6-1 {
		return time.Time{}, false, unixRange(f)
	}
	return time.UnixMicro(int64(us)).UTC(), true, nil
}

func unixRange(v any) error {
	return errors.New(describe(v) + " is out of range for a Unix time (use seconds, or milliseconds, between the years 0 and 9999)")
}

// parseTime parses the string forms; s is trimmed and not numeric.
func parseTime(s string, loc *time.Location) (time.Time, bool) {
	// Cheap shape check so that garbage costs no parse attempts.
	if len(s) < 19 || s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	sep := s[10]
	if sep != 'T' && sep != ' ' {
		return time.Time{}, false
	}
	// Skip an optional fraction to see whether a zone follows.
	i := 19
	if i < len(s) && (s[i] == '.' || s[i] == ',') {
		i++
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	var t time.Time
	var err error
	switch {
	case i == len(s) && sep == 'T':
		t, err = time.ParseInLocation("2006-01-02T15:04:05", s, loc)
	case i == len(s):
		t, err = time.ParseInLocation("2006-01-02 15:04:05", s, loc)
	case sep == 'T':
		t, err = time.Parse(time.RFC3339, s)
	default:
		t, err = time.Parse("2006-01-02 15:04:05Z07:00", s)
	}
	if err != nil {
		return time.Time{}, false
	}
	if y := t.Year(); y < 0 || y > 9999 {
		return time.Time{}, false
	}
	return t, true
}

// coerceTags accepts a list of strings or numbers, a comma-separated string,
// or (from a form) the values of a repeated key. Entries are trimmed; empty
// ones are dropped; no entries at all is nil.
func coerceTags(v any) ([]string, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case string:
		var tags []string
		for rest := x; rest != ""; {
			var tag string
			tag, rest, _ = strings.Cut(rest, ",")
			if tag = strings.TrimSpace(tag); tag != "" {
				tags = append(tags, tag)
			}
		}
		return tags, nil
	case int64, float64, json.Number:
		s, ok, err := coerceString(x)
		if err != nil || !ok {
			return nil, err
		}
		return []string{s}, nil
	case []any:
		var tags []string
		for i, e := range x {
			var s string
			switch e := e.(type) {
			case string:
				s = strings.TrimSpace(e)
			case int64, float64:
				var err error
				if s, _, err = coerceString(e); err != nil {
					return nil, errors.New("entry " + strconv.Itoa(i+1) + ": " + err.Error())
				}
			default:
				return nil, errors.New("entry " + strconv.Itoa(i+1) + " is " + describe(e) + "; tags must be strings or numbers")
			}
			if s != "" {
				if tags == nil {
					tags = make([]string, 0, len(x)-i)
				}
				tags = append(tags, s)
			}
		}
		return tags, nil
	default:
		if n, ok := normalize(v); ok && n != nil {
			return coerceTags(n)
		}
	}
	return nil, errors.New(describe(v) + " is not a list of tags (use a JSON array of strings or a comma-separated string)")
}
