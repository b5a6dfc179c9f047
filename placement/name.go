package placement

import (
	"path/filepath"
	"strings"
)

// DrvName is the derivation's name without its hash, version and ".drv":
// "/gnu/store/HASH-hello-2.12.1.drv" is "hello", "HASH-python-numpy-1.26.drv"
// "python-numpy". Learned build times are kept under it, so that a new version of a
// package starts from the times of the previous ones. The version starts at the first
// "-" not followed by a letter, as in the daemon's own split of package names.
func DrvName(drv string) string {
	base := strings.TrimSuffix(filepath.Base(drv), ".drv")
	if len(base) > 33 && base[32] == '-' {
		base = base[33:]
	}
	for i := 0; i+1 < len(base); i++ {
		if c := base[i+1] | 0x20; base[i] == '-' && (c < 'a' || c > 'z') {
			return base[:i]
		}
	}
	return base
}
