package encoders

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"strings"
	"unicode/utf8"
)

// xmlEncoder writes a root element with one child per param; dots nest.
type xmlEncoder struct{}

const defaultXMLRoot = "webhook"

func (xmlEncoder) Name() string        { return "xml" }
func (xmlEncoder) ContentType() string { return "application/xml; charset=utf-8" }

func (xmlEncoder) Encode(dst *bytes.Buffer, params []Param, opts Options) error {
	root, err := xmlRoot(opts)
	if err != nil {
		return err
	}
	start := dst.Len()
	dst.WriteString(xml.Header)
	writeXMLOpen(dst, root)
	if err := writeNested(dst, nestXML, params, ""); err != nil {
		dst.Truncate(start)
		return err
	}
	writeXMLClose(dst, root)
	return nil
}

func (xmlEncoder) CheckNames(names []string, opts Options) error {
	if _, err := xmlRoot(opts); err != nil {
		return err
	}
	return checkNestedNames(names, func(seg string) error {
		if why := xmlNameProblem(seg, false); why != "" {
			return xmlNameError(seg, why)
		}
		return nil
	})
}

func xmlRoot(opts Options) (string, error) {
	if opts.XMLRoot == "" {
		return defaultXMLRoot, nil
	}
	if why := xmlNameProblem(opts.XMLRoot, true); why != "" {
		return "", fmt.Errorf("xml root: %w", xmlNameError(opts.XMLRoot, why))
	}
	return opts.XMLRoot, nil
}

func xmlNameError(name, why string) error {
	return fmt.Errorf("%q is not a valid XML element name (%s)", name, why)
}

// xmlNameProblem says why s is not an acceptable element name, or returns
// "" if it is. Names are restricted to ASCII letters, digits, "-" and "_"
// (and "." where it does not nest): a subset of XML 1.0 names that every
// parser accepts and that needs no namespace handling. Names starting with
// "xml" are reserved by the XML spec.
func xmlNameProblem(s string, allowDot bool) string {
	if s == "" {
		return "name is empty"
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return "spaces are not allowed"
	}
	c := s[0]
	if !isASCIILetter(c) && c != '_' {
		return `it must start with a letter or "_"`
	}
	if len(s) >= 3 && strings.EqualFold(s[:3], "xml") {
		return `names starting with "xml" are reserved`
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case isASCIILetter(c), isDigit(c), c == '-', c == '_':
		case c == '.' && allowDot:
		case c >= utf8.RuneSelf:
			return `only ASCII letters, digits, "-" and "_" are allowed`
		default:
			return fmt.Sprintf("%q is not allowed", rune(c))
		}
	}
	return ""
}

func isASCIILetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func writeXMLOpen(dst *bytes.Buffer, name string) {
	dst.WriteByte('<')
	dst.WriteString(name)
	dst.WriteByte('>')
}

func writeXMLClose(dst *bytes.Buffer, name string) {
	dst.WriteString("</")
	dst.WriteString(name)
	dst.WriteByte('>')
}

// writeXMLElement writes v as element name: lists repeat the element,
// maps become child elements in key order, nil is an empty element.
// name must already be valid.
func writeXMLElement(dst *bytes.Buffer, name string, v any, depth int) error {
	var text string
	switch v := v.(type) {
	case []any:
		if depth >= maxDepth {
			return errTooDeep
		}
		for _, e := range v {
			if err := writeXMLElement(dst, name, e, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if depth >= maxDepth {
			return errTooDeep
		}
		writeXMLOpen(dst, name)
		for _, k := range sortedKeys(v) {
			if why := xmlNameProblem(k, true); why != "" {
				return fmt.Errorf("map key: %w", xmlNameError(k, why))
			}
			if err := writeXMLElement(dst, k, v[k], depth+1); err != nil {
				return err
			}
		}
		writeXMLClose(dst, name)
		return nil
	case nil:
	case string:
		text = v
	case json.Number:
		text = string(v)
	case bool, int64, uint64, float64:
		// Written below by writePlainScalar.
	default:
		n, err := normalize(v)
		if err != nil {
			return err
		}
		return writeXMLElement(dst, name, n, depth)
	}
	writeXMLOpen(dst, name)
	if _, err := writePlainScalar(dst, v); err != nil {
		return err
	}
	writeXMLText(dst, text)
	writeXMLClose(dst, name)
	return nil
}

// writeXMLText writes s escaped exactly as xml.EscapeText would, without
// the []byte conversion: markup characters, quotes, tab, CR and LF become
// character references (so CR survives end-of-line normalisation), and
// invalid UTF-8 or characters XML 1.0 forbids become U+FFFD.
func writeXMLText(dst *bytes.Buffer, s string) {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		var esc string
		if c < utf8.RuneSelf {
			switch c {
			case '"':
				esc = "&#34;"
			case '\'':
				esc = "&#39;"
			case '&':
				esc = "&amp;"
			case '<':
				esc = "&lt;"
			case '>':
				esc = "&gt;"
			case '\t':
				esc = "&#x9;"
			case '\n':
				esc = "&#xA;"
			case '\r':
				esc = "&#xD;"
			default:
				if c >= 0x20 {
					i++
					continue
				}
				esc = "\uFFFD"
			}
			dst.WriteString(s[start:i])
			dst.WriteString(esc)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r != utf8.RuneError || size != 1) && xmlCharOK(r) {
			i += size
			continue
		}
		dst.WriteString(s[start:i])
		dst.WriteString("\uFFFD")
		i += size
		start = i
	}
	dst.WriteString(s[start:])
}

// xmlCharOK reports whether non-ASCII r is an XML 1.0 Char.
func xmlCharOK(r rune) bool {
	return r <= 0xD7FF || 0xE000 <= r && r <= 0xFFFD || 0x10000 <= r && r <= 0x10FFFF
}
