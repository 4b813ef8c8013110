package encoders

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// formEncoder writes application/x-www-form-urlencoded pairs in
// declaration order. url.Values.Encode is not used because it sorts.
type formEncoder struct{}

func (formEncoder) Name() string        { return "form" }
func (formEncoder) ContentType() string { return "application/x-www-form-urlencoded" }

func (formEncoder) Encode(dst *bytes.Buffer, params []Param, _ Options) error {
	start := dst.Len()
	for _, p := range params {
		if err := writeFormValue(dst, start, p.Name, nil, p.Value, 0); err != nil {
			dst.Truncate(start)
			return paramError(p.Name, err)
		}
	}
	return nil
}

// CheckNames only rejects empty names: any byte string survives query
// escaping, and dots and brackets mean nothing to this encoder.
func (formEncoder) CheckNames(names []string, _ Options) error {
	for i, n := range names {
		if n == "" {
			return fmt.Errorf("param #%d: name is empty", i+1)
		}
	}
	return nil
}

// writeFormValue writes the pairs for v under key name+suffix, where suffix
// is the already escaped "%5Bk%5D..." path of enclosing map keys. Pairs are
// separated by "&" once anything has been written since start. Lists repeat
// the key and so write nothing when empty; so do empty maps.
func writeFormValue(dst *bytes.Buffer, start int, name string, suffix []byte, v any, depth int) error {
	switch v := v.(type) {
	case []any:
		if depth >= maxDepth {
			return errTooDeep
		}
		for _, e := range v {
			if err := writeFormValue(dst, start, name, suffix, e, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if depth >= maxDepth {
			return errTooDeep
		}
		n := len(suffix)
		for _, k := range sortedKeys(v) {
			// Appending past len(suffix) never clobbers the caller's
			// bytes, and siblings are written one after the other.
			suffix = append(suffix[:n], "%5B"...)
			suffix = appendQueryEscape(suffix, k)
			suffix = append(suffix, "%5D"...)
			if err := writeFormValue(dst, start, name, suffix, v[k], depth+1); err != nil {
				return err
			}
		}
		return nil
	}

	var text string
	switch v := v.(type) {
	case nil:
	case string:
		text = v
	case json.Number:
		text = string(v)
	case bool, int64, uint64, float64:
		// Written below by writePlainScalar, after the key.
	default:
		n, err := normalize(v)
		if err != nil {
			return err
		}
		return writeFormValue(dst, start, name, suffix, n, depth)
	}
	if dst.Len() > start {
		dst.WriteByte('&')
	}
	writeQueryEscape(dst, name)
	dst.Write(suffix)
	dst.WriteByte('=')
	if _, err := writePlainScalar(dst, v); err != nil {
		return err
	}
	writeQueryEscape(dst, text)
	return nil
}

// AppendQuery appends params as URL query (form rules) to rawURL, keeping
// the query it already has and any fragment at the end. The URL is not
// re-serialised, so its other parts stay byte for byte as configured. Used
// for form with GET and DELETE.
func AppendQuery(rawURL string, params []Param) (string, error) {
	if rawURL == "" {
		return "", errors.New("invalid url: empty")
	}
	if _, err := url.Parse(rawURL); err != nil {
		// Report the cause without the URL itself, which may carry tokens.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("invalid url: %w", err)
	}
	base, frag, hasFrag := strings.Cut(rawURL, "#")
	var b bytes.Buffer
	b.Grow(len(rawURL) + 32*len(params))
	b.WriteString(base)
	switch q := strings.IndexByte(base, '?'); {
	case q < 0:
		b.WriteByte('?')
	case q == len(base)-1, base[len(base)-1] == '&':
		// "?" or a trailing "&" already separates.
	default:
		b.WriteByte('&')
	}
	mark := b.Len()
	if err := (formEncoder{}).Encode(&b, params, Options{}); err != nil {
		return "", err
	}
	if b.Len() == mark {
		return rawURL, nil // nothing to add, e.g. only empty lists
	}
	if hasFrag {
		b.WriteByte('#')
		b.WriteString(frag)
	}
	return b.String(), nil
}

// queryKeep marks the bytes url.QueryEscape leaves alone (RFC 3986
// unreserved characters).
var queryKeep = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['-'], t['_'], t['.'], t['~'] = true, true, true, true
	return t
}()

const upperHex = "0123456789ABCDEF"

// writeQueryEscape writes url.QueryEscape(s) without allocating.
func writeQueryEscape(dst *bytes.Buffer, s string) {
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if queryKeep[c] {
			continue
		}
		dst.WriteString(s[start:i])
		if c == ' ' {
			dst.WriteByte('+')
		} else {
			dst.Write([]byte{'%', upperHex[c>>4], upperHex[c&0xF]})
		}
		start = i + 1
	}
	dst.WriteString(s[start:])
}

// appendQueryEscape appends url.QueryEscape(s) to b.
func appendQueryEscape(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case queryKeep[c]:
			b = append(b, c)
		case c == ' ':
			b = append(b, '+')
		default:
			b = append(b, '%', upperHex[c>>4], upperHex[c&0xF])
		}
	}
	return b
}
