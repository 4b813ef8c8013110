package callhook

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"

	"github.com/callhook/caddy-callhook/module/delivery"
)

// minSecretKey is the shortest secret_key accepted.
const minSecretKey = 16

// secretKey derives the sealing key from the secret_key option.
func secretKey(repl *caddy.Replacer, raw string) ([]byte, error) {
	v, err := expandEnv(repl, "secret_key", raw)
	if err != nil {
		return nil, err
	}
	if len(v) < minSecretKey {
		return nil, fmt.Errorf("secret_key is %d characters; use at least %d random ones (for example the output of `openssl rand -base64 32`)", len(v), minSecretKey)
	}
	sum := sha256.Sum256([]byte("callhook secret_key v1\x00" + v))
	return sum[:], nil
}

// keyFile is where the sealing key lives when secret_key is not set.
func keyFile() string { return filepath.Join(caddy.AppDataDir(), "callhook", "secret.key") }

// loadSealKey reads the key file, creating it on first start, unless
// secret_key gave the key. It runs in Start: Provision (caddy validate)
// creates no files.
func (a *App) loadSealKey() error {
	if a.cfg.sealKey != nil {
		return nil
	}
	key, err := loadOrCreateKey(keyFile())
	if err != nil {
		return fmt.Errorf("callhook secret key: %v; fix the file's permissions, or set secret_key in the callhook global option", err)
	}
	a.cfg.sealKey = key
	return nil
}

// loadOrCreateKey reads a key file of delivery.KeySize random bytes, or
// creates one (mode 0600, in a 0700 directory). Two processes that start
// at once agree on one key: the file appears complete, by a hard link,
// or not at all.
func loadOrCreateKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) != delivery.KeySize {
			return nil, fmt.Errorf("%s is %d bytes, want %d (remove it only if no queued delivery of a removed webhook needs it)", path, len(key), delivery.KeySize)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	key = make([]byte, delivery.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".secret.key-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	if _, err := tmp.Write(key); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadOrCreateKey(path) // another process was first
		}
		return nil, err
	}
	return key, nil
}
