package delivery

import (
	"bytes"
	"strings"
	"testing"
)

func TestKeyring(t *testing.T) {
	k := NewKeyring()
	if _, err := k.Seal("msg_1", [][]byte{[]byte("s")}); err != ErrNoKey {
		t.Fatalf("seal without a key: %v", err)
	}
	k1 := bytes.Repeat([]byte{1}, KeySize)
	if err := k.Use(k1); err != nil {
		t.Fatal(err)
	}
	secrets := [][]byte{[]byte("new-secret"), []byte("old-secret")}
	sealed, err := k.Seal("msg_1", secrets)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("sealed blob holds the plain secret")
	}
	if s, err := k.Seal("msg_1", nil); s != nil || err != nil {
		t.Errorf("no secrets seal to %v, %v", s, err)
	}
	// A key change: the old blob still opens, new ones use the new key.
	if err := k.Use(bytes.Repeat([]byte{2}, KeySize)); err != nil {
		t.Fatal(err)
	}
	got, err := k.Open("msg_1", sealed)
	if err != nil || len(got) != 2 || string(got[0]) != "new-secret" || string(got[1]) != "old-secret" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := k.Open("msg_2", sealed); err == nil || !strings.Contains(err.Error(), "another delivery") {
		t.Errorf("a blob moved to another delivery opened: %v", err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, err := k.Open("msg_1", tampered); err == nil {
		t.Error("a tampered blob opened")
	}
	other := NewKeyring()
	other.Use(bytes.Repeat([]byte{3}, KeySize))
	if _, err := other.Open("msg_1", sealed); err == nil || !strings.Contains(err.Error(), "secret_key") {
		t.Errorf("open under an unknown key: %v", err)
	}
	if err := k.Use([]byte("short")); err == nil {
		t.Error("a short key was accepted")
	}
}
