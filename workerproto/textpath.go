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
