package delivery

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// KeySize is the size of a sealing key (AES-256).
const KeySize = 32

// sealVersion is the first byte of a sealed blob.
const sealVersion = 1

// keyIDSize is the size of the key ID in a sealed blob: enough to pick the
// key among the few a process has used, too little to say anything of it.
const keyIDSize = 4

// Keyring seals signing secrets for the queue and opens them again, with
// AES-256-GCM, so that a queue backend (a JetStream cluster, a backup of
// the embedded store) only ever holds ciphertext. It seals with the newest
// key it was given and opens with any of them, so deliveries sealed before
// a key change still open in the same process. It is safe for concurrent
// use.
//
// A sealed blob is: version (1 byte), key ID (4 bytes of SHA-256 of the
// key), nonce (12 bytes), then the GCM ciphertext of the secrets (each a
// uvarint length and the bytes), authenticated together with the
// delivery's ID, so a blob copied onto another delivery does not open.
type Keyring struct {
	mu     sync.RWMutex
	newest []byte // key ID of the key that seals
	keys   map[string]cipher.AEAD
}

// NewKeyring returns an empty keyring; Use gives it a key.
func NewKeyring() *Keyring { return &Keyring{keys: map[string]cipher.AEAD{}} }

// Use makes key (KeySize bytes) the one that seals from now on; keys used
// before still open what they sealed.
func (k *Keyring) Use(key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("sealing key is %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(key)
	id := sum[:keyIDSize]
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[string(id)] = aead
	k.newest = id
	return nil
}

// ErrNoKey means the keyring has no key to seal with.
var ErrNoKey = errors.New("no sealing key")

// Seal seals secrets for the delivery id. No secrets seal to nil.
func (k *Keyring) Seal(id string, secrets [][]byte) ([]byte, error) {
	if len(secrets) == 0 {
		return nil, nil
	}
	k.mu.RLock()
	kid, aead := k.newest, k.keys[string(k.newest)]
	k.mu.RUnlock()
	if aead == nil {
		return nil, ErrNoKey
	}
	var plain []byte
	for _, s := range secrets {
		plain = binary.AppendUvarint(plain, uint64(len(s)))
		plain = append(plain, s...)
	}
	out := make([]byte, 0, 1+keyIDSize+aead.NonceSize()+len(plain)+aead.Overhead())
	out = append(out, sealVersion)
	out = append(out, kid...)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plain, []byte(id)), nil
}

// Open opens what Seal sealed for the delivery id.
func (k *Keyring) Open(id string, sealed []byte) ([][]byte, error) {
	if len(sealed) == 0 {
		return nil, nil
	}
	if sealed[0] != sealVersion || len(sealed) < 1+keyIDSize {
		return nil, errors.New("not a sealed secret of this version of callhook")
	}
	k.mu.RLock()
	aead := k.keys[string(sealed[1:1+keyIDSize])]
	k.mu.RUnlock()
	if aead == nil {
		return nil, errors.New("it was sealed under a secret key this process does not have (was secret_key changed, or the key file replaced?)")
	}
	rest := sealed[1+keyIDSize:]
	if len(rest) < aead.NonceSize() {
		return nil, errors.New("sealed secret is truncated")
	}
	plain, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], []byte(id))
	if err != nil {
		return nil, errors.New("sealed secret does not open: it was altered or belongs to another delivery")
	}
	var out [][]byte
	for len(plain) > 0 {
		n, w := binary.Uvarint(plain)
		if w <= 0 || n > uint64(len(plain)-w) {
			return nil, errors.New("sealed secret is malformed")
		}
		out = append(out, plain[w:w+int(n)])
		plain = plain[w+int(n):]
	}
	return out, nil
}
