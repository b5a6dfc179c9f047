package storeio

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"offload/sshexec/sshtest"
)

// vectorsDir holds data made by real Guix (see ../testdata/vectors/README.md).
const vectorsDir = "../testdata/vectors"

func nixStore(t testing.TB) string {
	t.Helper()
	return sshtest.NeedTool(t, "nix-store") // Debian: nix-bin
}

func vector(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vectorsDir, rel))
	if err != nil {
		t.Fatal(err) // the recordings are part of the repository
	}
	return b
}

// narBuilder writes nar tokens by hand, independently of the code under test, so tests
// can build hostile archives.
type narBuilder struct{ bytes.Buffer }

func (b *narBuilder) int(v uint64) *narBuilder {
	var x [8]byte
	binary.LittleEndian.PutUint64(x[:], v)
	b.Write(x[:])
	return b
}

func (b *narBuilder) str(ss ...string) *narBuilder {
	for _, s := range ss {
		b.int(uint64(len(s)))
		b.WriteString(s)
		for i := len(s); i%8 != 0; i++ {
			b.WriteByte(0)
		}
	}
	return b
}

func (b *narBuilder) file(contents string) *narBuilder {
	return b.str("(", "type", "regular", "contents", contents, ")")
}

// treeEntry describes one node for comparisons.
type treeEntry struct {
	Type    string // "dir", "file", "exec", "link"
	Content string // file contents or link target
}

// readTree maps every path under root (relative, "" for root) to its entry.
func readTree(t testing.TB, root string) map[string]treeEntry {
	t.Helper()
	m := map[string]treeEntry{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			rel = ""
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = treeEntry{"link", target}
		case fi.IsDir():
			m[rel] = treeEntry{Type: "dir"}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			typ := "file"
			if fi.Mode()&0o100 != 0 {
				typ = "exec"
			}
			m[rel] = treeEntry{typ, string(b)}
		default:
			t.Fatalf("unexpected file type at %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func compareTrees(t testing.TB, want, got map[string]treeEntry) {
	t.Helper()
	if len(want) != len(got) {
		t.Errorf("trees differ: %d entries vs %d", len(want), len(got))
	}
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		g, ok := got[k]
		if !ok {
			t.Errorf("%q missing", k)
			continue
		}
		if g != want[k] {
			t.Errorf("%q: got %s (%d bytes), want %s (%d bytes)", k, g.Type, len(g.Content), want[k].Type, len(want[k].Content))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %q", k)
		}
	}
}

// listDir returns the names in dir.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// assertEmptyDir checks nothing was left behind in dir.
func assertEmptyDir(t testing.TB, dir string) {
	t.Helper()
	if names := listDir(t, dir); len(names) != 0 {
		t.Errorf("left behind in %s: %s", dir, strings.Join(names, " "))
	}
}

func newSHA256() hash.Hash { return sha256.New() }
