package callhook

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "callhook", "secret.key")
	k1, err := loadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || len(k1) != 32 {
		t.Fatalf("key file %v %v, %d bytes", fi.Mode(), err, len(k1))
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %v", di.Mode().Perm())
	}
	k2, err := loadOrCreateKey(path)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("second load: %v, same key %v", err, string(k1) == string(k2))
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := loadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "5 bytes") {
		t.Errorf("a broken key file: %v", err)
	}
}

func TestSecretKeyOption(t *testing.T) {
	repl := caddy.NewReplacer()
	if _, err := secretKey(repl, "short"); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("short secret_key: %v", err)
	}
	t.Setenv("CALLHOOK_TEST_SK", "0123456789abcdef-0123")
	a, err := secretKey(repl, "{env.CALLHOOK_TEST_SK}")
	if err != nil || len(a) != 32 {
		t.Fatalf("secret_key from env: %v", err)
	}
	if _, err := secretKey(repl, "{env.CALLHOOK_SURELY_UNSET}"); err == nil {
		t.Error("an unset secret_key variable was accepted")
	}
}
