// Package encoders turns an ordered list of rendered parameters into a
// webhook request body. There is one stateless encoder per wire format,
// looked up by name:
//
//   - form: application/x-www-form-urlencoded, "name=value" pairs joined by
//     "&" in declaration order. nil is an empty value, lists repeat the key,
//     maps become name[key]=value (keys sorted, recursively, as PHP expects).
//     Names and values are escaped like url.QueryEscape. Dots have no meaning.
//     AppendQuery applies the same rules to a URL query for GET and DELETE.
//   - json: one object. A dot in a name nests ("agent.id" gives
//     {"agent":{"id":...}}); keys keep the order in which they first appear
//     at every level. Types are kept, nil is null, map values have sorted
//     keys and HTML characters are not escaped.
//   - xml: an XML declaration, then a root element (Options.XMLRoot, default
//     "webhook") with one child element per parameter. Dots nest as in json,
//     lists repeat the element, maps become child elements with sorted names
//     and nil is an empty element.
//   - jsonrpc: a JSON-RPC 2.0 request whose "params" member is the object the
//     json encoder would produce.
//
// Numbers are written in plain decimal (JSON uses the same notation as
// encoding/json, which switches to an exponent for very large and very small
// magnitudes). NaN and infinities cannot be represented and are an error.
// Output is always well formed for its format: invalid UTF-8 becomes U+FFFD
// in json and xml, and characters XML 1.0 forbids are replaced as well; form
// percent-encodes bytes as they are, so it is binary safe.
//
// Encoders are meant for a hot path: they use type switches rather than
// reflection, write straight into the caller's buffer and allocate only for
// map values (whose keys must be sorted). Parameter names are checked once
// at configuration time with CheckNames; Encode still refuses names that
// would lose data (duplicates, a name that is both a value and a parent) or
// break the document (invalid XML names), so a skipped check cannot
// produce a wrong body. On any error Encode leaves dst as it was.
package encoders

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Param is one rendered parameter, in declaration order.
type Param struct {
	Name  string
	Value any
}

// Options carries per-request settings some encoders need.
type Options struct {
	XMLRoot   string // xml: root element name, default "webhook"
	RPCMethod string // jsonrpc: the "method" member
	RPCID     string // jsonrpc: the "id" member (the delivery ID, a string)
}

// Encoder writes a request body in one wire format. Implementations are
// stateless and safe for concurrent use.
type Encoder interface {
	// Name is the format name used in configuration: "form", "json", "xml"
	// or "jsonrpc".
	Name() string
	// ContentType is the Content-Type header value for the body.
	ContentType() string
	// Encode appends the body for params to dst. On error nothing is
	// appended (dst is truncated back to its original length).
	Encode(dst *bytes.Buffer, params []Param, opts Options) error
	// CheckNames validates param names at config-load time and returns an
	// error naming the bad param and why.
	CheckNames(names []string, opts Options) error
}

// registry is in Names order; a slice beats a map for four entries.
var registry = [...]Encoder{formEncoder{}, jsonEncoder{}, xmlEncoder{}, jsonrpcEncoder{}}

// Lookup returns the encoder whose Name is name.
func Lookup(name string) (Encoder, bool) {
	for _, e := range registry {
		if e.Name() == name {
			return e, true
		}
	}
	return nil, false
}

// Names returns the names of all encoders: "form", "json", "xml", "jsonrpc".
// The slice is a fresh copy.
func Names() []string {
	names := make([]string, len(registry))
	for i, e := range registry {
		names[i] = e.Name()
	}
	return names
}

// maxDepth bounds list and map nesting inside a value. Callers hand over
// plain data, so hitting it means a cycle or a runaway structure; failing
// beats overflowing the stack.
const maxDepth = 64

var errTooDeep = fmt.Errorf("value nested deeper than %d levels", maxDepth)

// paramError prefixes err with the parameter name so config authors can
// find the culprit.
func paramError(name string, err error) error {
	return fmt.Errorf("param %q: %w", name, err)
}

// normalize converts the value types the encoders tolerate into the
// canonical set every encoder switches on: nil, string, bool, int64,
// uint64, float64, json.Number, []any and map[string]any. It is only
// reached for uncommon types, so allocating here is fine.
func normalize(v any) (any, error) {
	switch v := v.(type) {
	case int:
		return int64(v), nil
	case int8:
		return int64(v), nil
	case int16:
		return int64(v), nil
	case int32:
		return int64(v), nil
	case uint:
		return uint64(v), nil
	case uint8:
		return uint64(v), nil
	case uint16:
		return uint64(v), nil
	case uint32:
		return uint64(v), nil
	case uintptr:
		return uint64(v), nil
	case float32:
		// Go through the shortest float32 decimal so float32(0.1) is
		// written as 0.1, not 0.10000000149011612.
		f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(v), 'g', -1, 32), 64)
		return f, nil
	case []string:
		return toAny(v), nil
	case []int64:
		return toAny(v), nil
	case []int:
		return toAny(v), nil
	case []float64:
		return toAny(v), nil
	case []bool:
		return toAny(v), nil
	case map[string]string:
		m := make(map[string]any, len(v))
		for k, s := range v {
			m[k] = s
		}
		return m, nil
	case time.Time:
		// Checked before fmt.Stringer: Time.String is not a wire format.
		return v.Format(time.RFC3339Nano), nil
	case fmt.Stringer:
		return callString(v)
	}
	return nil, fmt.Errorf("unsupported value type %T", v)
}

func toAny[T any](s []T) []any {
	out := make([]any, len(s))
	for i, e := range s {
		out[i] = e
	}
	return out
}

// callString calls String, turning a panic (typically a nil pointer
// receiver) into an error instead of taking down the delivery worker.
func callString(s fmt.Stringer) (str any, err error) {
	defer func() {
		if r := recover(); r != nil {
			str, err = nil, fmt.Errorf("%T.String panicked: %v", s, r)
		}
	}()
	return s.String(), nil
}

// sortedKeys returns m's keys in byte order, the order encoding/json uses.
func sortedKeys(m map[string]any) []string {
	return slices.Sorted(maps.Keys(m))
}

// checkFloat rejects values no format can represent.
func checkFloat(f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%s cannot be encoded", strconv.FormatFloat(f, 'g', -1, 64))
	}
	return nil
}

// writePlainScalar writes bools and numbers as form and xml want them:
// plain decimal, no exponent. It reports false for other types.
func writePlainScalar(dst *bytes.Buffer, v any) (bool, error) {
	var tmp [64]byte
	switch v := v.(type) {
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
			return true, err
		}
		dst.Write(strconv.AppendFloat(tmp[:0], v, 'f', -1, 64))
	default:
		return false, nil
	}
	return true, nil
}

// Nested names (json, jsonrpc, xml).

type nestFormat uint8

const (
	nestJSON nestFormat = iota
	nestXML
)

// writeNested writes the json members or xml child elements formed by the
// params whose name starts with prefix ("" at the top, else a path ending
// in "."). Each distinct next segment is written once, at the position of
// the first param that has it, followed by every later param sharing it;
// this keeps declaration order of first appearance at every level without
// building a tree. The scan is quadratic, which is cheaper than allocating
// for the few dozen params a webhook has.
func writeNested(dst *bytes.Buffer, f nestFormat, params []Param, prefix string) error {
	first := true
	for i := range params {
		name := params[i].Name
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		seg, _, nested := strings.Cut(name[len(prefix):], ".")
		seen, err := seenSegment(params[:i], prefix, seg, nested, name)
		if err != nil {
			return err
		}
		if seen {
			continue
		}
		var sub string
		if nested {
			sub = name[:len(prefix)+len(seg)+1]
		}
		switch f {
		case nestJSON:
			if !first {
				dst.WriteByte(',')
			}
			writeJSONString(dst, seg)
			dst.WriteByte(':')
			if nested {
				dst.WriteByte('{')
				if err := writeNested(dst, f, params[i:], sub); err != nil {
					return err
				}
				dst.WriteByte('}')
			} else if err := writeJSONValue(dst, params[i].Value, 0); err != nil {
				return paramError(name, err)
			}
		case nestXML:
			if why := xmlNameProblem(seg, false); why != "" {
				return paramError(name, xmlNameError(seg, why))
			}
			if nested {
				writeXMLOpen(dst, seg)
				if err := writeNested(dst, f, params[i:], sub); err != nil {
					return err
				}
				writeXMLClose(dst, seg)
			} else if err := writeXMLElement(dst, seg, params[i].Value, 0); err != nil {
				return paramError(name, err)
			}
		}
		first = false
	}
	return nil
}

// seenSegment reports whether a param in earlier (all before the current
// one) already opened segment seg under prefix. Two params may share a
// segment only if both nest below it; otherwise one value would be lost or
// a key duplicated, so that is an error.
func seenSegment(earlier []Param, prefix, seg string, nested bool, name string) (bool, error) {
	for _, p := range earlier {
		if !strings.HasPrefix(p.Name, prefix) {
			continue
		}
		seg2, _, nested2 := strings.Cut(p.Name[len(prefix):], ".")
		if seg2 != seg {
			continue
		}
		if nested && nested2 {
			return true, nil
		}
		if p.Name == name {
			return false, fmt.Errorf("param %q is declared more than once", name)
		}
		return false, conflictError(p.Name, name)
	}
	return false, nil
}

func conflictError(a, b string) error {
	leaf := a
	if len(b) < len(a) {
		leaf = b
	}
	return fmt.Errorf("params %q and %q conflict: %q cannot be both a value and a parent of nested params", a, b, leaf)
}

// checkNestedNames is the config-time check shared by json, jsonrpc and
// xml: no empty names or segments, no duplicates, and no name that is both
// a value and a prefix of another name. segment, if not nil, validates
// each dot segment further and returns why it is unacceptable.
func checkNestedNames(names []string, segment func(string) error) error {
	index := make(map[string]int, len(names))
	for i, n := range names {
		if n == "" {
			return fmt.Errorf("param #%d: name is empty", i+1)
		}
		if !utf8.ValidString(n) {
			// Encoding would turn the bad bytes into U+FFFD, so two
			// distinct names could collide in the output.
			return paramError(n, errors.New("name is not valid UTF-8"))
		}
		if n[0] == '.' || n[len(n)-1] == '.' || strings.Contains(n, "..") {
			return paramError(n, errors.New(`empty name segment (a name cannot start or end with "." or contain "..")`))
		}
		if segment != nil {
			for s := range strings.SplitSeq(n, ".") {
				if err := segment(s); err != nil {
					return paramError(n, err)
				}
			}
		}
		if j, dup := index[n]; dup {
			return fmt.Errorf("param %q is declared more than once (#%d and #%d)", n, j+1, i+1)
		}
		index[n] = i
	}
	for i, n := range names {
		for k := 0; k < len(n); k++ {
			if n[k] != '.' {
				continue
			}
			if j, ok := index[n[:k]]; ok {
				if j < i {
					return conflictError(names[j], n)
				}
				return conflictError(n, names[j])
			}
		}
	}
	return nil
}

// jsonNumberValid reports whether s is a JSON number, so a json.Number
// can be written verbatim without breaking the document. It follows the
// grammar in RFC 8259 section 6, as encoding/json does.
func jsonNumberValid(s string) bool {
	if s != "" && s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	switch {
	case s[0] == '0':
		s = s[1:]
	case '1' <= s[0] && s[0] <= '9':
		s = skipDigits(s[1:])
	default:
		return false
	}
	if len(s) >= 2 && s[0] == '.' && isDigit(s[1]) {
		s = skipDigits(s[2:])
	}
	if len(s) >= 2 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s[0] == '+' || s[0] == '-' {
			s = s[1:]
		}
		if s == "" || !isDigit(s[0]) {
			return false
		}
		s = skipDigits(s)
	}
	return s == ""
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func skipDigits(s string) string {
	for len(s) > 0 && isDigit(s[0]) {
		s = s[1:]
	}
	return s
}
