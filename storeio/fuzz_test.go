package storeio

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func FuzzNarRestore(f *testing.F) {
	// Seeds: real nars (each item of the vector bundle), our hostile cases, a varied tree.
	if b, err := os.ReadFile(filepath.Join(vectorsDir, "bundles/a/export.nar")); err == nil {
		if items, err := ListBundle(bytes.NewReader(b)); err == nil {
			off := int64(8)
			for _, it := range items {
				f.Add(b[off : off+it.NarSize])
				off += it.NarSize + 8 + 8 + int64(len(it.Path)+7)/8*8 + 8 + 8 + 8
				for _, r := range it.References {
					off += 8 + int64(len(r)+7)/8*8
				}
				off += 8 + int64(len(it.Signature)+7)/8*8 + 8
			}
		}
	}
	for _, nar := range hostileNars() {
		f.Add(nar)
	}
	f.Add((&narBuilder{}).str(narMagic, "(", "type", "directory", "entry", "(", "name", "a", "node").file("x").str(")", "entry", "(", "name", "b", "node", "(", "type", "symlink", "target", "a", ")", ")", ")").Bytes())
	f.Fuzz(func(t *testing.T, nar []byte) {
		parent := t.TempDir()
		out := filepath.Join(parent, "out")
		err := Restore(bytes.NewReader(nar), out)
		if err != nil {
			if names := listDir(t, parent); len(names) != 0 {
				t.Fatalf("error %v left %v", err, names)
			}
			return
		}
		// What we accept, we dump back identically: the nar was canonical.
		var again bytes.Buffer
		if err := Dump(&again, out); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again.Bytes(), nar) {
			t.Fatalf("restored tree dumps differently")
		}
		removeTree(out)
	})
}

func FuzzParseSexp(f *testing.F) {
	for _, p := range []string{"bundles/a/acl", "bundles/a/signing-key.pub", "bundles/b/signing-key.pub"} {
		if b, err := os.ReadFile(filepath.Join(vectorsDir, p)); err == nil {
			f.Add(b)
		}
	}
	if b, err := os.ReadFile(filepath.Join(vectorsDir, "bundles/a/export.nar")); err == nil {
		if items, err := ListBundle(bytes.NewReader(b)); err == nil {
			for _, it := range items {
				f.Add(it.Signature)
			}
		}
	}
	f.Add([]byte("(4:hash6:sha256[3:x/y]|qwF4|\"a\\x41\\n\")"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSexp(b)
		if err != nil {
			return
		}
		// Both printed forms parse back to the same expression.
		for _, text := range [][]byte{[]byte(s.String()), s.Canonical()} {
			s2, err := ParseSexp(text)
			if err != nil {
				t.Fatalf("reparse of %q: %v", text, err)
			}
			if !s2.Equal(s) {
				t.Fatalf("round trip changed %q into %q", s.Canonical(), s2.Canonical())
			}
		}
		// Nothing that parses may crash the key, ACL or signature readers.
		ParsePublicKey(b)
		ParseSecretKey(b)
		ParseACL(b)
		VerifySignature(b, [32]byte{}, &ACL{})
	})
}
