package drv

import "offload/storeio"

// NixBase32 encodes b the way Nix prints hashes (storeio.NixBase32).
func NixBase32(b []byte) string { return storeio.NixBase32(b) }

// StorePath makes storeDir/HASH-name where HASH is 32 Nix base-32
// characters derived from fingerprint (storeio.MakeStorePath).
func StorePath(storeDir, fingerprint, name string) string {
	return storeio.MakeStorePath(storeDir, fingerprint, name)
}
