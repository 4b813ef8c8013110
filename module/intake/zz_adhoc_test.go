package intake

import (
	"strings"
	"testing"
	"time"
)

func TestAdhocSlow(t *testing.T) {
	big := 1 << 20
	for name, body := range map[string]string{
		"digits":     `{"call_id":1,"x":` + strings.Repeat("9", big-30) + `}`,
		"fracdigits": `{"call_id":1,"duration":0.` + strings.Repeat("0", big-40) + `1}`,
		"deep":       strings.Repeat("[", big-10),
		"commas":     `{"call_id":1,"tags":"` + strings.Repeat(",", big-30) + `"}`,
		"tagsarr":    `{"call_id":1,"tags":[` + strings.Repeat(`"a",`, big/4-20) + `"b"]}`,
		"keys":       `{"call_id":1` + strings.Repeat(`,"a":1`, big/6-10) + `}`,
	} {
		start := time.Now()
		_, err := Decode(newReq("POST", "/after_call", ctJSON, body), Options{})
		t.Logf("%s: %v %v", name, time.Since(start), func() string { if err != nil { s := err.Error(); if len(s) > 80 { s = s[:80] }; return s }; return "ok" }())
	}
	start := time.Now()
	_, err := Decode(newReq("POST", "/after_call", ctForm, "call_id=1"+strings.Repeat("&tags=a", big/7-10)), Options{})
	t.Log("form tags", time.Since(start), err)
}
