package callhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
)

// Cross-site request forgery protection of the dashboard's actions, in
// two layers:
//
//   - http.CrossOriginProtection refuses a POST a browser marks as
//     cross-site (Sec-Fetch-Site) or whose Origin is not the dashboard's
//     host;
//   - every form carries a token, an HMAC of the action and of a random
//     value kept in a SameSite=Strict, HttpOnly cookie scoped to the
//     dashboard's path, under a key made when the process starts. A page
//     from another site cannot read the cookie nor the token, so it cannot
//     forge a form even from a browser that sends neither header. A
//     restart makes open pages stale: their forms are refused, with a
//     message to reload.
const csrfCookieName = "callhook_dashboard"

var csrfKey = func() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic("callhook: no randomness for the dashboard's form key: " + err.Error())
	}
	return k
}()

// csrfCookie returns the browser's dashboard cookie, setting a new one if
// it has none (or one this process cannot have made).
func csrfCookie(w http.ResponseWriter, r *http.Request, base string) string {
	if c, err := r.Cookie(csrfCookieName); err == nil && len(c.Value) == 43 {
		if _, err := base64.RawURLEncoding.DecodeString(c.Value); err == nil {
			return c.Value
		}
	}
	b := make([]byte, 32)
	rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{
		Name:     csrfCookieName,
		Value:    v,
		Path:     base,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	return v
}

// formToken is the token of one action's forms for one browser.
func formToken(cookie, action string) string {
	m := hmac.New(sha256.New, csrfKey)
	m.Write([]byte(cookie))
	m.Write([]byte{0})
	m.Write([]byte(action))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkToken reports whether token is this browser's token for action.
func checkToken(cookie, action, token string) bool {
	if cookie == "" || token == "" {
		return false
	}
	return hmac.Equal([]byte(formToken(cookie, action)), []byte(token))
}
