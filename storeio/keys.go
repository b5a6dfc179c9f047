package storeio

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"os"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// ed25519Order is n, the order of the Ed25519 base point: 2^252 + 27742317777372353535851937790883648493.
var ed25519Order = func() *big.Int {
	n, _ := new(big.Int).SetString("27742317777372353535851937790883648493", 10)
	return n.Add(n, new(big.Int).Lsh(big.NewInt(1), 252))
}()

// PublicKey is a signer's public key: an Ed25519 point (Guix's ECDSA keys) or RSA.
type PublicKey struct {
	q   []byte         // ecc: the 32-byte Ed25519 point encoding
	rsa *rsa.PublicKey // rsa
}

// SecretKey is an ECDSA-over-Ed25519 secret key as Guix makes them.
type SecretKey struct {
	d *big.Int // big-endian scalar, Q = d*B
	q []byte
}

// IsRSA reports whether k is an RSA key.
func (k *PublicKey) IsRSA() bool { return k.rsa != nil }

// Equal reports whether two public keys are the same key (curve and q, or n and e).
func (k *PublicKey) Equal(o *PublicKey) bool {
	if k == nil || o == nil {
		return false
	}
	if k.rsa != nil || o.rsa != nil {
		return k.rsa != nil && o.rsa != nil && k.rsa.N.Cmp(o.rsa.N) == 0 && k.rsa.E == o.rsa.E
	}
	return bytes.Equal(k.q, o.q)
}

// sexp returns (public-key (ecc (curve Ed25519) (q #..#))) or (public-key (rsa (n ..) (e ..))).
func (k *PublicKey) sexp() *Sexp {
	if k.rsa != nil {
		return NewList(NewAtom("public-key"), NewList(NewAtom("rsa"),
			NewList(NewAtom("n"), NewBytes(mpiBytes(k.rsa.N))),
			NewList(NewAtom("e"), NewBytes(mpiBytes(big.NewInt(int64(k.rsa.E)))))))
	}
	return NewList(NewAtom("public-key"), NewList(NewAtom("ecc"),
		NewList(NewAtom("curve"), NewAtom("Ed25519")),
		NewList(NewAtom("q"), NewBytes(k.q))))
}

// MarshalText returns the key as Guix writes /etc/guix/signing-key.pub.
func (k *PublicKey) MarshalText() []byte { return []byte(k.sexp().String()) }

// String returns the key's text without the final new line.
func (k *PublicKey) String() string { return string(bytes.TrimSuffix(k.MarshalText(), []byte("\n"))) }

// mpiBytes encodes a non-negative integer as libgcrypt prints an MPI in the standard
// format: big-endian, no leading zeros, a 0x00 prefix when the top bit is set.
func mpiBytes(x *big.Int) []byte {
	b := x.Bytes()
	if len(b) > 0 && b[0]&0x80 != 0 {
		b = append([]byte{0}, b...)
	}
	return b
}

// ParsePublicKey parses (public-key (ecc (curve Ed25519) (q #..#))) or
// (public-key (rsa (n #..#) (e #..#))).
func ParsePublicKey(b []byte) (*PublicKey, error) {
	s, err := ParseSexp(b)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return publicKeyFromSexp(s)
}

func publicKeyFromSexp(s *Sexp) (*PublicKey, error) {
	if s.Head() != "public-key" || len(s.List) != 2 {
		return nil, errors.New("public key: not a (public-key ...) s-expression")
	}
	alg := s.List[1]
	switch alg.Head() {
	case "ecc":
		q, err := eccPoint(alg)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		return &PublicKey{q: q}, nil
	case "rsa":
		n, e := alg.Find("n").Value(1), alg.Find("e").Value(1)
		if len(n) == 0 || len(e) == 0 {
			return nil, errors.New("public key: rsa key without n or e")
		}
		ei := new(big.Int).SetBytes(e)
		if !ei.IsInt64() || ei.Int64() < 3 || ei.Int64() > 1<<31-1 {
			return nil, errors.New("public key: unsupported rsa exponent")
		}
		return &PublicKey{rsa: &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(ei.Int64())}}, nil
	default:
		return nil, fmt.Errorf("public key: unsupported algorithm %q", alg.Head())
	}
}

// eccPoint checks an (ecc ...) list is an Ed25519 ECDSA key and returns its q.
func eccPoint(alg *Sexp) ([]byte, error) {
	if c := string(alg.Find("curve").Value(1)); c != "Ed25519" {
		return nil, fmt.Errorf("unsupported curve %q", c)
	}
	if f := alg.Find("flags"); f != nil {
		for _, e := range f.List[1:] {
			if string(e.Atom) == "eddsa" {
				return nil, errors.New("EdDSA keys are not supported (Guix uses ECDSA)")
			}
		}
	}
	q := alg.Find("q").Value(1)
	if len(q) == 33 && q[0] == 0x40 { // libgcrypt's optional "compressed" prefix
		q = q[1:]
	}
	if len(q) != 32 {
		return nil, fmt.Errorf("q is %d bytes, want 32", len(q))
	}
	if _, err := new(edwards25519.Point).SetBytes(q); err != nil {
		return nil, fmt.Errorf("q is not a point on Ed25519: %w", err)
	}
	return bytes.Clone(q), nil
}

// GenerateKey makes a new secret key: d uniform in [1, n-1].
func GenerateKey() (*SecretKey, error) {
	d, err := randScalar()
	if err != nil {
		return nil, err
	}
	return &SecretKey{d: d, q: baseMult(d).Bytes()}, nil
}

func randScalar() (*big.Int, error) {
	k, err := rand.Int(rand.Reader, new(big.Int).Sub(ed25519Order, big.NewInt(1)))
	if err != nil {
		return nil, fmt.Errorf("random scalar: %w", err)
	}
	return k.Add(k, big.NewInt(1)), nil
}

// ParseSecretKey parses (private-key (ecc (curve Ed25519) (q #..#) (d #..#))), the
// format of /etc/guix/signing-key.sec, and checks that q = d*B.
func ParseSecretKey(b []byte) (*SecretKey, error) {
	s, err := ParseSexp(b)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	if s.Head() != "private-key" || len(s.List) != 2 || s.List[1].Head() != "ecc" {
		return nil, errors.New("secret key: not a (private-key (ecc ...)) s-expression")
	}
	alg := s.List[1]
	q, err := eccPoint(alg)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	db := alg.Find("d").Value(1)
	if len(db) == 0 || len(db) > 33 {
		return nil, errors.New("secret key: missing or malformed d")
	}
	d := new(big.Int).SetBytes(db)
	if d.Sign() == 0 || d.Cmp(ed25519Order) >= 0 {
		return nil, errors.New("secret key: d out of range")
	}
	if !bytes.Equal(baseMult(d).Bytes(), q) {
		return nil, errors.New("secret key: q does not match d")
	}
	return &SecretKey{d: d, q: q}, nil
}

// LoadSecretKey reads a secret key file such as /etc/guix/signing-key.sec.
func LoadSecretKey(path string) (*SecretKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseSecretKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Public returns the public half of k.
func (k *SecretKey) Public() *PublicKey { return &PublicKey{q: bytes.Clone(k.q)} }

// MarshalText returns the key as Guix writes /etc/guix/signing-key.sec.
func (k *SecretKey) MarshalText() []byte {
	s := NewList(NewAtom("private-key"), NewList(NewAtom("ecc"),
		NewList(NewAtom("curve"), NewAtom("Ed25519")),
		NewList(NewAtom("q"), NewBytes(k.q)),
		NewList(NewAtom("d"), NewBytes(mpiBytes(k.d)))))
	return []byte(s.String())
}

// Sign signs a SHA-256 hash and returns the signature s-expression text that goes into
// an export bundle, in the form Guix writes:
// (signature (data (flags rfc6979) (hash sha256 #..#)) (sig-val (ecdsa (r ..) (s ..))) (public-key ..)).
// k is random rather than RFC 6979's; verifiers cannot tell the difference.
func (k *SecretKey) Sign(hash [32]byte) ([]byte, error) {
	e := hashInt(hash)
	for {
		kk, err := randScalar()
		if err != nil {
			return nil, err
		}
		r := affineX(baseMult(kk))
		r.Mod(r, ed25519Order)
		if r.Sign() == 0 {
			continue
		}
		s := new(big.Int).Mul(r, k.d)
		s.Add(s, e)
		s.Mul(s, new(big.Int).ModInverse(kk, ed25519Order))
		s.Mod(s, ed25519Order)
		if s.Sign() == 0 {
			continue
		}
		sig := NewList(NewAtom("signature"),
			dataSexp(hash, "rfc6979"),
			NewList(NewAtom("sig-val"), NewList(NewAtom("ecdsa"),
				NewList(NewAtom("r"), NewBytes(mpiBytes(r))),
				NewList(NewAtom("s"), NewBytes(mpiBytes(s))))),
			k.Public().sexp())
		return []byte(sig.String()), nil
	}
}

func dataSexp(hash [32]byte, flag string) *Sexp {
	return NewList(NewAtom("data"),
		NewList(NewAtom("flags"), NewAtom(flag)),
		NewList(NewAtom("hash"), NewAtom("sha256"), NewBytes(bytes.Clone(hash[:]))))
}

// hashInt is e: the hash as a big-endian integer truncated to n's 253 bits, as
// libgcrypt's ECDSA does (always a shift by 256-253 = 3).
func hashInt(hash [32]byte) *big.Int {
	e := new(big.Int).SetBytes(hash[:])
	return e.Rsh(e, 3)
}

// scalar converts 0 <= x < n to an edwards25519 scalar.
func scalar(x *big.Int) *edwards25519.Scalar {
	var le [32]byte
	x.FillBytes(le[:])
	for i, j := 0, 31; i < j; i, j = i+1, j-1 {
		le[i], le[j] = le[j], le[i]
	}
	s, err := new(edwards25519.Scalar).SetCanonicalBytes(le[:])
	if err != nil {
		panic("storeio: scalar out of range") // callers reduce mod n first
	}
	return s
}

func baseMult(x *big.Int) *edwards25519.Point {
	return new(edwards25519.Point).ScalarBaseMult(scalar(x))
}

// affineX returns the affine Edwards x-coordinate of P as an integer.
func affineX(P *edwards25519.Point) *big.Int {
	X, _, Z, _ := P.ExtendedCoordinates()
	x := new(field.Element).Multiply(X, new(field.Element).Invert(Z))
	le := x.Bytes()
	be := make([]byte, 32)
	for i := range le {
		be[31-i] = le[i]
	}
	return new(big.Int).SetBytes(be)
}

// verifyECDSA checks an ECDSA-over-Ed25519 signature (r, s) of hash by the point q.
func verifyECDSA(q []byte, hash [32]byte, rb, sb []byte) bool {
	r, s := new(big.Int).SetBytes(rb), new(big.Int).SetBytes(sb)
	if r.Sign() <= 0 || s.Sign() <= 0 || r.Cmp(ed25519Order) >= 0 || s.Cmp(ed25519Order) >= 0 {
		return false
	}
	Q, err := new(edwards25519.Point).SetBytes(q)
	if err != nil {
		return false
	}
	w := new(big.Int).ModInverse(s, ed25519Order)
	u1 := new(big.Int).Mul(hashInt(hash), w)
	u1.Mod(u1, ed25519Order)
	u2 := new(big.Int).Mul(r, w)
	u2.Mod(u2, ed25519Order)
	X := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(scalar(u2), Q, scalar(u1))
	if X.Equal(edwards25519.NewIdentityPoint()) == 1 {
		return false
	}
	x := affineX(X)
	x.Mod(x, ed25519Order)
	return x.Cmp(r) == 0
}

// verifyRSA checks a PKCS#1 v1.5 signature over a SHA-256 hash.
func verifyRSA(pub *rsa.PublicKey, hash [32]byte, sb []byte) bool {
	size := pub.Size()
	v := new(big.Int).SetBytes(sb) // an MPI: leading zeros may be missing or extra
	if v.BitLen() > size*8 {
		return false
	}
	sig := v.FillBytes(make([]byte, size))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, hash[:], sig) == nil
}
