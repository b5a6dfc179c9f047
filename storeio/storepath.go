package storeio

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultStoreDir is the store Guix uses when NIX_STORE_DIR is unset.
const DefaultStoreDir = "/gnu/store"

// nixBase32Alphabet is Nix's base-32 alphabet (no e, o, u, t).
const nixBase32Alphabet = "0123456789abcdfghijklmnpqrsvwxyz"

// hashPartLen is the length of the hash part of a store path's base name.
const hashPartLen = 32

// StoreDir returns the store directory: $NIX_STORE_DIR, as the daemon honours it, or
// /gnu/store.
func StoreDir() string {
	if d := os.Getenv("NIX_STORE_DIR"); d != "" {
		return d
	}
	return DefaultStoreDir
}

// ValidateStorePath reports whether p is a store path directly under storeDir:
// storeDir + "/" + 32 Nix base-32 characters + "-" + a name made of [A-Za-z0-9+-._?=]
// that does not start with '.'. Paths inside store items, trailing slashes and "." or
// ".." components are refused.
func ValidateStorePath(storeDir, p string) error {
	if storeDir == "" || storeDir[0] != '/' || filepath.Clean(storeDir) != storeDir {
		return fmt.Errorf("invalid store directory %q", storeDir)
	}
	prefix := storeDir + "/"
	if storeDir == "/" {
		prefix = "/"
	}
	base, ok := strings.CutPrefix(p, prefix)
	if !ok {
		return fmt.Errorf("%q is not in the store %s", p, storeDir)
	}
	if len(base) < hashPartLen+2 || base[hashPartLen] != '-' {
		return fmt.Errorf("%q is not a valid store path", p)
	}
	for i := 0; i < hashPartLen; i++ {
		if strings.IndexByte(nixBase32Alphabet, base[i]) < 0 {
			return fmt.Errorf("%q is not a valid store path: bad hash part", p)
		}
	}
	name := base[hashPartLen+1:]
	if name[0] == '.' {
		return fmt.Errorf("%q is not a valid store path: name starts with '.'", p)
	}
	for i := 0; i < len(name); i++ {
		if !storeNameChar(name[i]) {
			return fmt.Errorf("%q is not a valid store path: bad character %q in name", p, name[i])
		}
	}
	return nil
}

func storeNameChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("+-._?=", c) >= 0
}

// ValidateDrvPath is ValidateStorePath for derivation files: the name must end in ".drv".
func ValidateDrvPath(storeDir, p string) error {
	if err := ValidateStorePath(storeDir, p); err != nil {
		return err
	}
	if !strings.HasSuffix(p, ".drv") {
		return fmt.Errorf("%q is not a derivation path", p)
	}
	return nil
}

// NixBase32 encodes b the way Nix prints hashes ("sha256:1vg5...") : base 32 over Nix's
// alphabet, least significant bits last.
func NixBase32(b []byte) string {
	n := (len(b)*8 + 4) / 5
	out := make([]byte, n)
	for i := n - 1; i >= 0; i-- {
		bit := uint(i * 5)
		j, k := bit/8, bit%8
		c := b[j] >> k
		if int(j)+1 < len(b) && k > 3 {
			c |= b[j+1] << (8 - k)
		}
		out[n-1-i] = nixBase32Alphabet[c&0x1f]
	}
	return string(out)
}

// MakeStorePath returns storeDir/HASH-name, HASH being the 32 base-32 characters of
// sha256(fingerprint) folded to 20 bytes by XOR, as the daemon names items. For real
// items the fingerprint is "TYPE:sha256:HEX:STOREDIR:NAME", TYPE being e.g. "text" plus
// ":REF" per sorted reference (AddTextToStore), "source" or "output:OUT".
func MakeStorePath(storeDir, fingerprint, name string) string {
	d := sha256.Sum256([]byte(fingerprint))
	var c [20]byte
	for i, x := range d {
		c[i%len(c)] ^= x
	}
	return storeDir + "/" + NixBase32(c[:]) + "-" + name
}
