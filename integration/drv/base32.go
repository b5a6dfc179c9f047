package drv

import (
	"crypto/sha256"

	"offload/storeio"
)

// NixBase32 encodes b the way Nix prints hashes (storeio.NixBase32).
func NixBase32(b []byte) string { return storeio.NixBase32(b) }

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
