package intake

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// afterCallBody is a realistic after_call event: canonical fields plus a few
// vendor extras, 27 keys in all.
const afterCallBody = `{
	"event": "after_call",
	"call_id": "1714557600.48213",
	"direction": "incoming",
	"insertion_type": "dynamic",
	"caller": "+79991234567",
	"callee": "+74951234567",
	"tracking_number": "+74957654321",
	"pool_name": "yandex-direct",
	"disposition": "ANSWERED",
	"start_time": "2024-05-01 13:00:00",
	"answer_time": 1714557612,
	"end_time": "2024-05-01T10:04:31Z",
	"duration": 271,
	"talk_time": "259",
	"wait_time": 12,
	"recording_url": "https://pbx.example.com/rec/1714557600.48213.mp3",
	"has_recording": "1",
	"first_call": true,
	"city": "Moscow",
	"utm_source": "yandex",
	"utm_medium": "cpc",
	"utm_campaign": "spring_sale",
	"landing_page": "https://shop.example.com/spring?utm_source=yandex",
	"agent_name": "Olena",
	"tags": ["vip", "repeat"],
	"pbx": {"node": "pbx-2", "trunk": 7, "cost": 0.35},
	"token_hint": null
}`

func BenchmarkDecodeJSON(b *testing.B) {
	opts := Options{Location: time.FixedZone("MSK", 3*3600), Now: func() time.Time { return time.Unix(0, 0) }}
	body := strings.NewReader(afterCallBody)
	r := httptest.NewRequest("POST", "/hooks/after_call", nil)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("User-Agent", "pbx/18.2")
	r.Header.Set("X-Forwarded-For", "198.51.100.7")
	r.Body = io.NopCloser(body) // reset per iteration, so the loop measures Decode alone
	r.ContentLength = int64(len(afterCallBody))
	if _, err := Decode(r, opts); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(afterCallBody)))
	b.ReportAllocs()
	for b.Loop() {
		body.Reset(afterCallBody)
		if _, err := Decode(r, opts); err != nil {
			b.Fatal(err)
		}
	}
}
