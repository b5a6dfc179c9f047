package workerproto

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	"offload/storeio"
)

// TextPath returns the store path AddTextToStore gives content named name with refs:
// the daemon hashes "text" and the sorted references, the content's SHA-256, the store
// directory and the name (§4.4). A caller can thus know a .drv's remote path, and
// whether it is there, before sending it.
func TextPath(storeDir, name string, content []byte, refs []string) string {
	sum := sha256.Sum256(content)
	var fp strings.Builder
	fp.WriteString("text")
	for _, r := range slices.Sorted(slices.Values(refs)) {
		fp.WriteString(":" + r)
	}
	fp.WriteString(":sha256:" + hex.EncodeToString(sum[:]) + ":" + storeDir + ":" + name)
	return storeio.MakeStorePath(storeDir, fp.String(), name)
}

// SourcePath returns the store path AddToStore gives a nar whose SHA-256 is narHash
// (64 hex digits), recursive, named name: makeStorePath("source", ...) with no
// references (§4.5b). An item whose path is this can be re-created on another store
// without a signature.
func SourcePath(storeDir, name, narHash string) string {
	return storeio.MakeStorePath(storeDir, "source:sha256:"+narHash+":"+storeDir+":"+name, name)
}
