package mapping

import (
	"fmt"
	"time"
)

// DateFormat is a resolved `date_format`: either a Go layout or a Unix
// timestamp (which yields a number, not a string).
type DateFormat struct {
	Layout string
	Unix   UnixPrecision
}

// UnixPrecision says whether a date formats as a Unix number, and in which unit.
type UnixPrecision int

const (
	NotUnix UnixPrecision = iota
	UnixSeconds
	UnixMillis
)

// datePresets are the named formats of SPEC §5.
var datePresets = map[string]DateFormat{
	"rfc3339":    {Layout: time.RFC3339},
	"rfc3339_ms": {Layout: "2006-01-02T15:04:05.000Z07:00"},
	"iso8601":    {Layout: "2006-01-02T15:04:05-0700"},
	"rfc2822":    {Layout: time.RFC1123Z},
	"datetime":   {Layout: time.DateTime},
	"date":       {Layout: time.DateOnly},
	"unix":       {Unix: UnixSeconds},
	"unix_ms":    {Unix: UnixMillis},
}

// DatePresetNames lists the preset names, for error messages and docs.
const DatePresetNames = "rfc3339, rfc3339_ms, iso8601, rfc2822, datetime, date, unix, unix_ms"

// ParseDateFormat resolves a preset name or a Go reference layout. A layout
// that formats no date or time component (a typo such as "YYYY-MM-DD") is
// an error, because it would send the same constant text for every call.
func ParseDateFormat(s string) (DateFormat, error) {
	if s == "" {
		return datePresets["rfc3339"], nil
	}
	if f, ok := datePresets[s]; ok {
		return f, nil
	}
	a := time.Date(2006, 1, 2, 15, 4, 5, 123456789, time.UTC)
	b := time.Date(2011, 12, 13, 21, 22, 23, 987654321, time.FixedZone("X", 3*3600))
	if a.Format(s) == b.Format(s) {
		return DateFormat{}, fmt.Errorf("date format %q formats no date or time component: use a preset (%s) or a Go reference layout such as \"2006-01-02 15:04:05\"", s, DatePresetNames)
	}
	return DateFormat{Layout: s}, nil
}

// Format renders t in loc: a string for layouts, an int64 for unix formats.
func (f DateFormat) Format(t time.Time, loc *time.Location) any {
	switch f.Unix {
	case UnixSeconds:
		return t.Unix()
	case UnixMillis:
		return t.UnixMilli()
	}
	if loc != nil {
		t = t.In(loc)
	}
	return t.Format(f.Layout)
}
