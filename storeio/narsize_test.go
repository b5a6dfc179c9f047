package storeio

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNarSize: NarSize equals the length of Dump's output for a tree with every kind
// of node, names and contents of lengths around the 8-byte padding.
func TestNarSize(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "item")
	for _, d := range []string{"", "sub", "sub/deeper"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{"a": "", "bb": "1234567", "sub/ccccccc": "12345678", "sub/deeper/x": "123456789"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "bb"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/deeper/x-target", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "bb"), filepath.Join(dir, "link")} {
		var c countWriter
		if err := Dump(&c, p); err != nil {
			t.Fatal(err)
		}
		got, err := NarSize(p)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.n {
			t.Errorf("NarSize(%s) = %d, Dump wrote %d bytes", p, got, c.n)
		}
	}
	if _, err := NarSize(filepath.Join(dir, "absent")); err == nil {
		t.Error("NarSize of a missing path did not fail")
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
