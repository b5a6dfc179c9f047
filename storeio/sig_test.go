package storeio

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSexpForms(t *testing.T) {
	// The same expression in every syntax libgcrypt accepts.
	want := NewList(NewAtom("hash"), NewAtom("sha256"), NewBytes([]byte{0xAB, 0x01, 'x'}))
	for _, text := range []string{
		"(hash sha256 #AB0178#)",
		"(4:hash6:sha2563:\xab\x01x)",
		"(hash \"sha256\" #ab 01 78#)",
		"(hash |c2hhMjU2| |qwF4|)",
		"  (hash\n\t sha256 3#AB0178#)  \n",
		"(hash \"sha\\x32\\0656\" \"\\xab\\001x\")",
		"(hash \"sha2\\\n56\" #AB0178#)",
	} {
		got, err := ParseSexp([]byte(text))
		if err != nil {
			t.Errorf("%q: %v", text, err)
			continue
		}
		if !got.Equal(want) {
			t.Errorf("%q parsed as %q", text, got.Canonical())
		}
	}
	h, err := ParseSexp([]byte("(a [text/plain]\"hi\")"))
	if err != nil || string(h.List[1].Hint) != "text/plain" || string(h.List[1].Atom) != "hi" {
		t.Errorf("display hint: %v %v", h, err)
	}
	if !bytes.Equal(h.Canonical(), []byte("(1:a[10:text/plain]2:hi)")) {
		t.Errorf("canonical with hint: %q", h.Canonical())
	}
	for _, bad := range []string{"", "(", ")", "(a", "(a))", "(#A#)", "(|**|)", "(3:ab)", "(\"x)", "(a) b", "atom", "(a \"\\q\")", strings.Repeat("(", 100) + strings.Repeat(")", 100)} {
		if _, err := ParseSexp([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestSexpPrintsLikeGuix checks our advanced printer reproduces Guix's files byte for byte.
func TestSexpPrintsLikeGuix(t *testing.T) {
	for _, f := range []string{"bundles/a/acl", "bundles/a/signing-key.pub", "bundles/b/signing-key.pub"} {
		b := vector(t, f)
		s, err := ParseSexp(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if s.String() != string(b) {
			t.Errorf("%s reprinted differently:\n%s\nwant:\n%s", f, s.String(), b)
		}
	}
	for _, it := range vectorItems(t, "a") {
		s, err := ParseSexp(it.Signature)
		if err != nil {
			t.Fatal(err)
		}
		if s.String() != string(it.Signature) {
			t.Errorf("signature reprinted differently:\n%s\nwant:\n%s", s.String(), it.Signature)
		}
	}
}

func vectorItems(t testing.TB, which string) []ItemInfo {
	t.Helper()
	items, err := ListBundle(bytes.NewReader(vector(t, "bundles/"+which+"/export.nar")))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 {
		t.Fatalf("%d items in %s", len(items), which)
	}
	return items
}

func vectorACL(t testing.TB) *ACL {
	t.Helper()
	acl, err := ParseACL(vector(t, "bundles/a/acl"))
	if err != nil {
		t.Fatal(err)
	}
	return acl
}

func TestVerifyVectorSignatures(t *testing.T) {
	acl := vectorACL(t)
	keyA, err := ParsePublicKey(vector(t, "bundles/a/signing-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	keyB, err := ParsePublicKey(vector(t, "bundles/b/signing-key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if !acl.Authorized(keyA) || acl.Authorized(keyB) {
		t.Fatal("ACL lookup wrong")
	}
	for _, it := range vectorItems(t, "a") {
		k, err := VerifySignature(it.Signature, it.Hash, acl)
		if err != nil {
			t.Errorf("%s: %v", it.Path, err)
		}
		if !k.Equal(keyA) {
			t.Errorf("%s: signer %v", it.Path, k)
		}
	}
	for _, it := range vectorItems(t, "b") {
		if _, err := VerifySignature(it.Signature, it.Hash, acl); !errors.Is(err, ErrUnauthorizedKey) {
			t.Errorf("b %s: %v, want unauthorized public key", it.Path, err)
		}
		// b's signatures are genuine: with b's key authorized they verify. This is the
		// check that our ECDSA-over-Ed25519 arithmetic agrees with libgcrypt's.
		aclB := &ACL{}
		aclB.Add(keyB)
		if _, err := VerifySignature(it.Signature, it.Hash, aclB); err != nil {
			t.Errorf("b %s under b's key: %v", it.Path, err)
		}
		// A different hash is caught before the key and the signature.
		other := it.Hash
		other[5] ^= 1
		if _, err := VerifySignature(it.Signature, other, aclB); !errors.Is(err, ErrInvalidHash) {
			t.Errorf("wrong hash: %v", err)
		}
	}
}

// TestSignatureArithmetic tampers with r and s: the verifier must notice.
func TestSignatureArithmetic(t *testing.T) {
	acl := vectorACL(t)
	it := vectorItems(t, "a")[0]
	s, err := ParseSexp(it.Signature)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"r", "s"} {
		bad, _ := ParseSexp(it.Signature)
		v := bad.Find(field).List[1]
		v.Atom = bytes.Clone(v.Atom)
		v.Atom[len(v.Atom)-1] ^= 1
		if _, err := VerifySignature([]byte(bad.String()), it.Hash, acl); !errors.Is(err, ErrInvalidSignature) {
			t.Errorf("tampered %s: %v", field, err)
		}
	}
	// r = n (out of range) and s = 0 are invalid.
	for _, tc := range []struct {
		field string
		v     *big.Int
	}{{"r", ed25519Order}, {"s", big.NewInt(0)}} {
		bad, _ := ParseSexp(it.Signature)
		bad.Find(tc.field).List[1].Atom = tc.v.Bytes()
		if _, err := VerifySignature([]byte(bad.String()), it.Hash, acl); !errors.Is(err, ErrInvalidSignature) {
			t.Errorf("%s = %v: %v", tc.field, tc.v, err)
		}
	}
	_ = s
}

func TestSignAndVerify(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	acl := &ACL{}
	acl.Add(k.Public())
	// The ACL text we write must be read back with the same meaning.
	acl2, err := ParseACL(acl.MarshalText())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		hash := sha256.Sum256([]byte(fmt.Sprint(i)))
		sig, err := k.Sign(hash)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := VerifySignature(sig, hash, acl2)
		if err != nil {
			t.Fatalf("our signature: %v\n%s", err, sig)
		}
		if !signer.Equal(k.Public()) {
			t.Fatal("wrong signer")
		}
		// Guix's shape: (signature (data (flags rfc6979) (hash sha256 #..#)) (sig-val (ecdsa ...)) (public-key ...)).
		s, _ := ParseSexp(sig)
		if s.Head() != "signature" || s.List[1].Head() != "data" || s.List[2].Head() != "sig-val" ||
			s.List[2].List[1].Head() != "ecdsa" || s.List[3].Head() != "public-key" ||
			string(s.Find("flags").Value(1)) != "rfc6979" {
			t.Fatalf("signature shape:\n%s", sig)
		}
		other := hash
		other[0] ^= 0x80
		if _, err := VerifySignature(sig, other, acl2); !errors.Is(err, ErrInvalidHash) {
			t.Fatalf("signature accepted for another hash: %v", err)
		}
	}
	// Vector key a is not ours.
	if _, err := VerifySignature(vectorItems(t, "a")[0].Signature, vectorItems(t, "a")[0].Hash, acl2); !errors.Is(err, ErrUnauthorizedKey) {
		t.Errorf("vector signature under our ACL: %v", err)
	}
}

// TestForgedKeySwap puts an authorized key into a signature made by another key.
func TestForgedKeySwap(t *testing.T) {
	acl := vectorACL(t)
	mallory, _ := GenerateKey()
	it := vectorItems(t, "a")[0]
	sig, err := mallory.Sign(it.Hash)
	if err != nil {
		t.Fatal(err)
	}
	keyA := vectorACL(t).Keys()[0]
	s, err := ParseSexp(sig)
	if err != nil {
		t.Fatal(err)
	}
	s.List[3] = keyA.sexp()
	if _, err := VerifySignature([]byte(s.String()), it.Hash, acl); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("forged signature: %v", err)
	}
}

func TestVerifySignatureRefusals(t *testing.T) {
	acl := vectorACL(t)
	var h [32]byte
	if _, err := VerifySignature(nil, h, acl); !errors.Is(err, ErrNoSignature) {
		t.Errorf("nil: %v", err)
	}
	for _, s := range []string{"garbage", "(signature)", "(signature (data) (sig-val) (public-key (ecc (curve Ed448) (q #00#))))"} {
		if _, err := VerifySignature([]byte(s), h, acl); !errors.Is(err, ErrCorruptSignature) {
			t.Errorf("%q: %v", s, err)
		}
	}
}

func TestKeyTextRoundTrip(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sec := k.MarshalText()
	k2, err := ParseSecretKey(sec)
	if err != nil {
		t.Fatalf("%v\n%s", err, sec)
	}
	if !bytes.Equal(k2.MarshalText(), sec) || !k2.Public().Equal(k.Public()) {
		t.Fatal("secret key round trip changed it")
	}
	if !strings.HasPrefix(string(sec), "(private-key \n (ecc \n  (curve Ed25519)\n  (q #") {
		t.Errorf("secret key text not in Guix's form:\n%s", sec)
	}
	pub, err := ParsePublicKey(k.Public().MarshalText())
	if err != nil || !pub.Equal(k.Public()) {
		t.Fatalf("public key round trip: %v", err)
	}
	// A key file from Guix reads back identically.
	b := vector(t, "bundles/a/signing-key.pub")
	pa, err := ParsePublicKey(b)
	if err != nil || !bytes.Equal(pa.MarshalText(), b) {
		t.Fatalf("vector key round trip: %v", err)
	}
	// A secret key whose q is not d*B is refused.
	other, _ := GenerateKey()
	bad := strings.Replace(string(sec), hexUpper(k.q), hexUpper(other.q), 1)
	if _, err := ParseSecretKey([]byte(bad)); err == nil {
		t.Fatal("mismatched q and d accepted")
	}
	// The file written by a test program loads.
	p := filepath.Join(t.TempDir(), "signing-key.sec")
	os.WriteFile(p, sec, 0o600)
	if k3, err := LoadSecretKey(p); err != nil || !k3.Public().Equal(k.Public()) {
		t.Fatalf("LoadSecretKey: %v", err)
	}
}

func hexUpper(b []byte) string { return strings.ToUpper(fmt.Sprintf("%x", b)) }

func TestACL(t *testing.T) {
	b := vector(t, "bundles/a/acl")
	acl, err := ParseACL(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(acl.MarshalText(), b) {
		t.Errorf("ACL reprinted differently:\n%s", acl.MarshalText())
	}
	empty, err := ParseACL([]byte("(acl)"))
	if err != nil || len(empty.Keys()) != 0 {
		t.Fatalf("empty acl: %v", err)
	}
	for _, bad := range []string{"(public-key (ecc (curve Ed25519) (q #00#)))", "(acl (entry (public-key (rsa (n #00#) (e #03#))) (tag (guix export))))", "(acl (foo))"} {
		if _, err := ParseACL([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	missing, err := LoadACL(filepath.Join(t.TempDir(), "none"))
	if err != nil || len(missing.Keys()) != 0 {
		t.Fatalf("missing ACL file: %v", err)
	}
}

// TestRSASignatures checks old-style RSA keys, signed here with Go's PKCS#1 v1.5.
func TestRSASignatures(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.Sum256([]byte("item"))
	sigBytes, err := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, hash[:])
	if err != nil {
		t.Fatal(err)
	}
	pubText := fmt.Sprintf("(public-key (rsa (n #00%X#) (e #%06X#)))", priv.N.Bytes(), priv.E)
	sig := fmt.Sprintf("(signature (data (flags pkcs1) (hash sha256 #%X#)) (sig-val (rsa (s #%X#))) %s)", hash[:], sigBytes, pubText)
	pub, err := ParsePublicKey([]byte(pubText))
	if err != nil {
		t.Fatal(err)
	}
	acl := &ACL{}
	acl.Add(pub)
	acl, err = ParseACL(acl.MarshalText())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifySignature([]byte(sig), hash, acl); err != nil {
		t.Fatalf("rsa: %v", err)
	}
	badSig := bytes.Clone(sigBytes)
	badSig[10] ^= 1
	bad := fmt.Sprintf("(signature (data (flags pkcs1) (hash sha256 #%X#)) (sig-val (rsa (s #%X#))) %s)", hash[:], badSig, pubText)
	if _, err := VerifySignature([]byte(bad), hash, acl); !errors.Is(err, ErrInvalidSignature) {
		t.Fatalf("tampered rsa: %v", err)
	}
	if _, err := VerifySignature([]byte(sig), hash, vectorACL(t)); !errors.Is(err, ErrUnauthorizedKey) {
		t.Fatalf("rsa key not in ACL: %v", err)
	}
}

// TestSignatureHashAlgorithm: a signature whose (hash ALG #..#) names another algorithm
// than sha256 is refused as an invalid hash, although its digest bytes are the item's
// SHA-256 and its r, s are valid over them (the algorithm name is not part of the ECDSA
// arithmetic: only the name check can refuse it).
func TestSignatureHashAlgorithm(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	acl := &ACL{}
	acl.Add(k.Public())
	hash := sha256.Sum256([]byte("item"))
	sig, err := k.Sign(hash)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifySignature(sig, hash, acl); err != nil {
		t.Fatalf("the unmodified signature: %v", err)
	}
	for _, alg := range []string{"sha512", "sha1", "md5", "sha3-256", "SHA256", "sha256x", "sha25"} {
		s, err := ParseSexp(sig)
		if err != nil {
			t.Fatal(err)
		}
		h := s.Find("hash")
		if h == nil || len(h.List) != 3 || string(h.Value(1)) != "sha256" {
			t.Fatalf("no (hash sha256 ...) in our signature:\n%s", sig)
		}
		h.List[1] = NewAtom(alg)
		text := []byte(s.String())
		if !bytes.Contains(text, []byte("(hash "+alg+" ")) {
			t.Fatalf("%s: the algorithm name was not replaced:\n%s", alg, text)
		}
		if _, err := VerifySignature(text, hash, acl); !errors.Is(err, ErrInvalidHash) {
			t.Errorf("(hash %s #<the sha256 digest>#): %v, want %v", alg, err, ErrInvalidHash)
		}
	}
}
