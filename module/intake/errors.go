package intake

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/callhook/caddy-callhook/internal/text"
)

// Error is a request error with the HTTP status to answer and a message that
// says what is wrong and how to fix it. Msg is meant for the sender's
// operator: it names the field and the accepted forms, never a secret.
type Error struct {
	Status int
	Msg    string
	// Event is the canonical event name when the request named one, so a
	// rejection can be counted per event without unbounded label values.
	Event string
}

// Error returns the message.
func (e *Error) Error() string { return e.Msg }

// AllowedMethods is the value for the Allow header of a 405 answer.
const AllowedMethods = "GET, POST, PUT"

func newError(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// maxQuoted bounds how much of a received value an error message echoes.
const maxQuoted = 64

// quote quotes s for a message, cut to maxQuoted bytes at a rune boundary.
// Invalid UTF-8 comes out escaped, so messages are always valid text.
func quote(s string) string {
	cut, ok := text.Cut(s, maxQuoted)
	if !ok {
		return strconv.Quote(s)
	}
	return strconv.Quote(cut) + "…"
}

// describe renders a decoded value for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return quote(v)
	case bool:
		return strconv.FormatBool(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case json.Number:
		return string(v)
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case time.Time:
		return v.Format(time.RFC3339Nano)
	default:
		return fmt.Sprintf("a value of type %T", v)
	}
}
