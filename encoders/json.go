package encoders

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// jsonEncoder writes one JSON object; dots in names nest.
type jsonEncoder struct{}

func (jsonEncoder) Name() string        { return "json" }
func (jsonEncoder) ContentType() string { return "application/json" }

func (jsonEncoder) Encode(dst *bytes.Buffer, params []Param, _ Options) error {
	start := dst.Len()
	dst.WriteByte('{')
	if err := writeNested(dst, nestJSON, params, ""); err != nil {
		dst.Truncate(start)
		return err
	}
	dst.WriteByte('}')
	return nil
}

func (jsonEncoder) CheckNames(names []string, _ Options) error {
	return checkNestedNames(names, nil)
}

// WriteJSON writes v as the json format writes a param's value: map keys
// sorted, so equal values give equal bytes, and json.Number as it was sent.
// For decoded bodies it is what encoding/json's Marshal gives (bar HTML
// escaping), without reflection: ingest stores and hashes every event's
// data this way.
func WriteJSON(dst *bytes.Buffer, v any) error { return writeJSONValue(dst, v, 0) }

// writeJSONValue writes v by hand rather than through encoding/json: the
// type switch avoids reflection and the per-call encoder allocation.
func writeJSONValue(dst *bytes.Buffer, v any, depth int) error {
	var tmp [64]byte
	switch v := v.(type) {
	case nil:
		dst.WriteString("null")
	case string:
		writeJSONString(dst, v)
	case bool:
		if v {
			dst.WriteString("true")
		} else {
			dst.WriteString("false")
		}
	case int64:
		dst.Write(strconv.AppendInt(tmp[:0], v, 10))
	case uint64:
		dst.Write(strconv.AppendUint(tmp[:0], v, 10))
	case float64:
		if err := checkFloat(v); err != nil {
			return err
		}
		dst.Write(appendJSONFloat(tmp[:0], v))
	case json.Number:
		if v == "" {
			dst.WriteByte('0') // as encoding/json does
		} else if !jsonNumberValid(string(v)) {
			return fmt.Errorf("invalid json.Number %q", string(v))
		} else {
			dst.WriteString(string(v))
		}
	case []any:
		if depth >= maxDepth {
			return errTooDeep
		}
		dst.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				dst.WriteByte(',')
			}
			if err := writeJSONValue(dst, e, depth+1); err != nil {
				return err
			}
		}
		dst.WriteByte(']')
	case map[string]any:
		if depth >= maxDepth {
			return errTooDeep
		}
		dst.WriteByte('{')
		for i, k := range sortedKeys(v) {
			if i > 0 {
				dst.WriteByte(',')
			}
			writeJSONString(dst, k)
			dst.WriteByte(':')
			if err := writeJSONValue(dst, v[k], depth+1); err != nil {
				return err
			}
		}
		dst.WriteByte('}')
	default:
		n, err := normalize(v)
		if err != nil {
			return err
		}
		return writeJSONValue(dst, n, depth)
	}
	return nil
}

// appendJSONFloat formats f like encoding/json (ES6 number to string):
// plain decimal, except an exponent below 1e-6 and from 1e21 up.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const lowerHex = "0123456789abcdef"

// writeJSONString writes s as a JSON string exactly as encoding/json does
// with HTML escaping off: invalid UTF-8 bytes become \ufffd, and U+2028 and
// U+2029 are escaped so the body is also safe to embed in JavaScript.
func writeJSONString(dst *bytes.Buffer, s string) {
	dst.WriteByte('"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst.WriteString(s[start:i])
			switch c {
			case '"', '\\':
				dst.WriteByte('\\')
				dst.WriteByte(c)
			case '\b':
				dst.WriteString(`\b`)
			case '\f':
				dst.WriteString(`\f`)
			case '\n':
				dst.WriteString(`\n`)
			case '\r':
				dst.WriteString(`\r`)
			case '\t':
				dst.WriteString(`\t`)
			default:
				dst.WriteString(`\u00`)
				dst.WriteByte(lowerHex[c>>4])
				dst.WriteByte(lowerHex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst.WriteString(s[start:i])
			dst.WriteString(`\ufffd`)
		case r == '\u2028' || r == '\u2029':
			dst.WriteString(s[start:i])
			dst.WriteString(`\u202`)
			dst.WriteByte(lowerHex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst.WriteString(s[start:])
	dst.WriteByte('"')
}
