package delivery

import (
	"bytes"
	"strings"
	"testing"
)

func TestSignReferenceVector(t *testing.T) {
	// https://github.com/standard-webhooks/standard-webhooks test vector.
	secret, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	if got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestParseSecret(t *testing.T) {
	raw, err := ParseSecret("plain-secret")
	if err != nil || string(raw) != "plain-secret" {
		t.Fatalf("plain secret: %q, %v", raw, err)
	}
	if k, err := ParseSecret(""); err != nil || k != nil {
		t.Fatalf("empty secret should mean unsigned: %q, %v", k, err)
	}
	// Unpadded base64 is accepted too.
	padded, err := ParseSecret("whsec_c2VjcmV0MQ==")
	if err != nil {
		t.Fatal(err)
	}
	unpadded, err := ParseSecret("whsec_c2VjcmV0MQ")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(padded, []byte("secret1")) || !bytes.Equal(unpadded, padded) {
		t.Fatalf("decoded %q and %q, want secret1", padded, unpadded)
	}

	for _, bad := range []string{"whsec_", "whsec_!!!not-base64!!!", "whsec_====", "whsec_a"} {
		_, err := ParseSecret(bad)
		if err == nil {
			t.Errorf("ParseSecret(%q) succeeded, want an error", bad)
			continue
		}
		if enc := strings.TrimPrefix(bad, "whsec_"); len(enc) > 4 && strings.Contains(err.Error(), enc) {
			t.Errorf("error %q quotes the secret", err)
		}
	}
}
