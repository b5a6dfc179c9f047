package drv

import "crypto/sha256"

// nixBase32Chars is Nix's base-32 alphabet (no e, o, u, t).
const nixBase32Chars = "0123456789abcdfghijklmnpqrsvwxyz"

// NixBase32 encodes b the way Nix prints hashes: the last 5-bit group of the
// little-endian bit string comes first.
func NixBase32(b []byte) string {
	n := (len(b)*8-1)/5 + 1
	out := make([]byte, 0, n)
	for i := n - 1; i >= 0; i-- {
		bit := i * 5
		j, k := bit/8, uint(bit%8)
		c := int(b[j]) >> k
		if j+1 < len(b) {
			c |= int(b[j+1]) << (8 - k)
		}
		out = append(out, nixBase32Chars[c&0x1f])
	}
	return string(out)
}

// compressHash folds a hash to size bytes by XOR, as Nix does for store
// path hashes.
func compressHash(h []byte, size int) []byte {
	out := make([]byte, size)
	for i, c := range h {
		out[i%size] ^= c
	}
	return out
}

// StorePath makes storeDir/HASH-name where HASH is 32 Nix base-32
// characters derived from fingerprint.
func StorePath(storeDir, fingerprint, name string) string {
	h := sha256.Sum256([]byte(fingerprint))
	return storeDir + "/" + NixBase32(compressHash(h[:], 20)) + "-" + name
}
