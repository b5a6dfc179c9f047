package storeio

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLoadACLEmptyFile: an empty ACL file is called empty, not a parse error.
func TestLoadACLEmptyFile(t *testing.T) {
	for _, content := range []string{"", "\n  \n"} {
		path := filepath.Join(t.TempDir(), "acl")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadACL(path)
		if err == nil || err.Error() != path+" is empty: it should hold (acl ...), which `guix archive --authorize` writes" {
			t.Errorf("%q: %v", content, err)
		}
	}
}
