package intake

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

const (
	ctJSON = "application/json"
	ctForm = "application/x-www-form-urlencoded"
)

// newReq builds a request; body "" means no body.
func newReq(method, target, ctype, body string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	return r
}

// unsizedReader hides the body's length, as a chunked request does.
type unsizedReader struct{ r io.Reader }

func (u unsizedReader) Read(p []byte) (int, error) { return u.r.Read(p) }

// callField returns the value of the Call field with the given expr tag,
// dereferenced; nil for a nil pointer or slice.
func callField(t testing.TB, c *Call, name string) any {
	t.Helper()
	rv := reflect.ValueOf(c).Elem()
	rt := rv.Type()
	for i := range rt.NumField() {
		if rt.Field(i).Tag.Get("expr") != name {
			continue
		}
		f := rv.Field(i)
		if f.IsNil() {
			return nil
		}
		if f.Kind() == reflect.Pointer {
			return f.Elem().Interface()
		}
		return f.Interface()
	}
	t.Fatalf("Call has no field %q", name)
	return nil
}

// checkMessage enforces the message style: not empty, valid UTF-8, starts
// lower-case, no trailing punctuation.
func checkMessage(t testing.TB, msg string) {
	t.Helper()
	if msg == "" {
		t.Fatal("empty error message")
	}
	if !utf8.ValidString(msg) {
		t.Errorf("message is not valid UTF-8: %q", msg)
	}
	if r, _ := utf8.DecodeRuneInString(msg); unicode.IsUpper(r) {
		t.Errorf("message starts upper-case: %q", msg)
	}
	if strings.HasSuffix(msg, ".") || strings.HasSuffix(msg, "!") {
		t.Errorf("message ends with punctuation: %q", msg)
	}
}

// asError unwraps an *Error or fails.
func asError(t testing.TB, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	return e
}
