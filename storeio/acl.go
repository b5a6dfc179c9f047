package storeio

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// Signature verdicts, in the order Guix checks them: the signed hash, then the key
// in the ACL, then the signature itself. Callers match them
// with errors.Is; the messages are Guix's.
var (
	ErrNoSignature      = errors.New("imported file lacks a signature")
	ErrCorruptSignature = errors.New("corrupt signature data")
	ErrInvalidHash      = errors.New("invalid hash")
	ErrUnauthorizedKey  = errors.New("unauthorized public key")
	ErrInvalidSignature = errors.New("invalid signature")
)

// ACL is the set of keys authorized to sign imports (/etc/guix/acl).
type ACL struct {
	keys []*PublicKey
}

// ParseACL parses an ACL: (acl (entry PUBLIC-KEY (tag (guix import))) ...). Like Guix,
// it refuses any other shape rather than guess what an entry means.
func ParseACL(b []byte) (*ACL, error) {
	s, err := ParseSexp(b)
	if err != nil {
		return nil, fmt.Errorf("acl: %w", err)
	}
	if s.Head() != "acl" {
		return nil, errors.New("invalid access-control list: not an (acl ...) s-expression")
	}
	a := &ACL{}
	for i, e := range s.List[1:] {
		if e.Head() != "entry" || len(e.List) != 3 || !isGuixImportTag(e.List[2]) {
			return nil, fmt.Errorf("invalid access-control list: entry %d is not (entry KEY (tag (guix import)))", i+1)
		}
		k, err := publicKeyFromSexp(e.List[1])
		if err != nil {
			return nil, fmt.Errorf("invalid access-control list: entry %d: %w", i+1, err)
		}
		a.keys = append(a.keys, k)
	}
	return a, nil
}

func isGuixImportTag(t *Sexp) bool {
	if t.Head() != "tag" || len(t.List) != 2 {
		return false
	}
	g := t.List[1]
	return g.IsList && len(g.List) == 2 && string(g.Value(0)) == "guix" && string(g.Value(1)) == "import"
}

// LoadACL reads an ACL file. A missing file is an empty ACL, as for Guix when there is
// no signing key either; any other read error is returned.
func LoadACL(path string) (*ACL, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &ACL{}, nil
	}
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(b)) == 0 {
		// Not a parse error at offset 0: the file is empty (a truncated write, or
		// `touch`), and `guix archive --authorize` is what fills it.
		return nil, fmt.Errorf("%s is empty: it should hold (acl ...), which `guix archive --authorize` writes", path)
	}
	a, err := ParseACL(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// Authorized reports whether k is in the ACL.
func (a *ACL) Authorized(k *PublicKey) bool {
	if a == nil {
		return false
	}
	for _, x := range a.keys {
		if x.Equal(k) {
			return true
		}
	}
	return false
}

// Add authorizes k (for tests and test programs; the hook only reads the ACL).
func (a *ACL) Add(k *PublicKey) {
	if !a.Authorized(k) {
		a.keys = append(a.keys, k)
	}
}

// Keys returns the authorized keys.
func (a *ACL) Keys() []*PublicKey { return append([]*PublicKey(nil), a.keys...) }

// MarshalText returns the ACL as Guix writes /etc/guix/acl.
func (a *ACL) MarshalText() []byte {
	s := NewList(NewAtom("acl"))
	for _, k := range a.keys {
		s.List = append(s.List, NewList(NewAtom("entry"), k.sexp(),
			NewList(NewAtom("tag"), NewList(NewAtom("guix"), NewAtom("import")))))
	}
	return []byte(s.String())
}

// VerifySignature checks a signature s-expression from an export bundle against the
// hash computed over the item, in Guix's order: the signed hash must equal hash
// (ErrInvalidHash), the signer must be in acl (ErrUnauthorizedKey; a nil acl
// authorizes no one), and the signature must verify (ErrInvalidSignature). An empty sig
// is ErrNoSignature, one that does not have the expected shape ErrCorruptSignature.
// It returns the signer's key when it has one, even with an error.
func VerifySignature(sig []byte, hash [32]byte, acl *ACL) (*PublicKey, error) {
	if len(bytes.TrimSpace(sig)) == 0 {
		return nil, ErrNoSignature
	}
	s, err := ParseSexp(sig)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptSignature, err)
	}
	data, sigVal, pk := s.Child("data"), s.Child("sig-val"), s.Child("public-key")
	if s.Head() != "signature" || data == nil || sigVal == nil || pk == nil {
		return nil, fmt.Errorf("%w: missing data, sig-val or public-key", ErrCorruptSignature)
	}
	key, err := publicKeyFromSexp(pk)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptSignature, err)
	}
	h := data.Child("hash")
	if h == nil || len(h.List) != 3 {
		return key, fmt.Errorf("%w: no (hash ALGORITHM VALUE) in data", ErrCorruptSignature)
	}
	if string(h.Value(1)) != "sha256" || !bytes.Equal(h.Value(2), hash[:]) {
		return key, ErrInvalidHash
	}
	if !acl.Authorized(key) {
		return key, ErrUnauthorizedKey
	}
	if !verifyWith(key, sigVal, hash) {
		return key, ErrInvalidSignature
	}
	return key, nil
}

func verifyWith(key *PublicKey, sigVal *Sexp, hash [32]byte) bool {
	if len(sigVal.List) != 2 {
		return false
	}
	v := sigVal.List[1]
	if key.rsa != nil {
		return v.Head() == "rsa" && verifyRSA(key.rsa, hash, v.Find("s").Value(1))
	}
	if v.Head() != "ecdsa" {
		return false
	}
	return verifyECDSA(key.q, hash, v.Find("r").Value(1), v.Find("s").Value(1))
}

// IsRefusal tells whether err says that an archive was refused for what it holds (a
// malformed archive, a path not asked for, a missing or bad signature), as opposed to
// a failure to read or write it (a broken pipe, a full disk).
func IsRefusal(err error) bool {
	for _, e := range []error{ErrInvalidArchive, ErrNotAllowed, ErrNoSignature, ErrCorruptSignature,
		ErrInvalidHash, ErrUnauthorizedKey, ErrInvalidSignature, ErrInvalidSexp} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
