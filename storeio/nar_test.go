package storeio

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// makeVariedTree builds a tree that exercises every corner of the nar format.
func makeVariedTree(t testing.TB, root string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	mk := func(rel string, size int, mode os.FileMode) {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, rel string) {
		if err := os.Symlink(target, filepath.Join(root, rel)); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"empty-dir", "a/b/c/d", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk("empty-file", 0, 0o644)
	for n := 1; n <= 17; n++ {
		mk(filepath.Join("sizes", strings.Repeat("x", n)), n, 0o644)
	}
	mk("bin/tool", 100, 0o755)
	mk("bin/owner-exec-only", 9, 0o700)
	mk("bin/group-exec-only", 9, 0o654) // not executable for Nix: only the owner bit counts
	mk("big", 3<<20+5, 0o644)
	mk("a/b/c/d/deep", 7, 0o444)
	// Names whose byte order differs from other orders people assume.
	for _, n := range []string{"B", "a", "Z", "_", "a.b", "a-b", "a0", "é", "~", "+x", "A"} {
		mk(filepath.Join("sorted", n), len(n), 0o644)
	}
	link("bin/tool", "link-to-tool")
	link("/nonexistent/dangling", "dangling")
	link("a/b", "dir-link")
	link("../..", "a/b/up")
}

func TestDumpMatchesNixStore(t *testing.T) {
	nix := nixStore(t)
	root := filepath.Join(t.TempDir(), "tree")
	makeVariedTree(t, root)

	var ours bytes.Buffer
	if err := Dump(&ours, root); err != nil {
		t.Fatal(err)
	}
	theirs, err := exec.Command(nix, "--dump", root).Output()
	if err != nil {
		t.Fatalf("nix-store --dump: %v", err)
	}
	if !bytes.Equal(ours.Bytes(), theirs) {
		i := 0
		for i < len(theirs) && i < ours.Len() && theirs[i] == ours.Bytes()[i] {
			i++
		}
		t.Fatalf("our dump (%d bytes) differs from nix-store --dump (%d bytes) at byte %d", ours.Len(), len(theirs), i)
	}

	// A single file and a single symlink are nars too.
	for _, rel := range []string{"big", "dangling", "empty-file"} {
		ours.Reset()
		if err := Dump(&ours, filepath.Join(root, rel)); err != nil {
			t.Fatal(err)
		}
		theirs, err := exec.Command(nix, "--dump", filepath.Join(root, rel)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours.Bytes(), theirs) {
			t.Errorf("%s: our dump differs from nix-store's", rel)
		}
	}
}

func TestRestoreAgainstNixStore(t *testing.T) {
	nix := nixStore(t)
	tmp := t.TempDir()
	root := filepath.Join(tmp, "tree")
	makeVariedTree(t, root)
	want := readTree(t, root)

	// nix-store --restore of our dump.
	var ours bytes.Buffer
	if err := Dump(&ours, root); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nix, "--restore", filepath.Join(tmp, "by-nix"))
	cmd.Stdin = bytes.NewReader(ours.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nix-store --restore: %v: %s", err, out)
	}
	compareTrees(t, want, readTree(t, filepath.Join(tmp, "by-nix")))

	// Our Restore of nix-store --dump.
	theirs, err := exec.Command(nix, "--dump", root).Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := Restore(bytes.NewReader(theirs), filepath.Join(tmp, "by-us")); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, readTree(t, filepath.Join(tmp, "by-nix")), readTree(t, filepath.Join(tmp, "by-us")))
}

func TestRestoreCanonicalisesModesAndTimes(t *testing.T) {
	tmp := t.TempDir()
	root := filepath.Join(tmp, "tree")
	makeVariedTree(t, root)
	var nar bytes.Buffer
	if err := Dump(&nar, root); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(tmp, "out")
	if err := Restore(&nar, out); err != nil {
		t.Fatal(err)
	}
	err := filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		var want os.FileMode
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			return nil
		case fi.IsDir():
			want = os.ModeDir | 0o555
		case fi.Mode()&0o100 != 0:
			want = 0o555
		default:
			want = 0o444
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
		if fi.ModTime().Unix() != 1 {
			t.Errorf("%s: mtime %v, want 1", p, fi.ModTime().Unix())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(out, "bin/tool")); err != nil || fi.Mode() != 0o555 {
		t.Errorf("bin/tool not executable: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(out, "bin/group-exec-only")); err != nil || fi.Mode() != 0o444 {
		t.Errorf("bin/group-exec-only: %v %v", fi, err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(out, "dangling"), &st); err != nil || st.Mtim.Sec != 1 {
		t.Logf("symlink mtime not set (best effort): %v %v", st.Mtim, err)
	}
}

func TestRestoreRefusesExistingTarget(t *testing.T) {
	tmp := t.TempDir()
	var nar narBuilder
	nar.str(narMagic).file("x")
	target := filepath.Join(tmp, "exists")
	if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Restore(bytes.NewReader(nar.Bytes()), target); err == nil {
		t.Fatal("restored over an existing file")
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "precious" {
		t.Fatalf("existing file touched: %q %v", b, err)
	}
}

// hostileNars are nars Restore must refuse, each for one reason.
func hostileNars() map[string][]byte {
	dir := func(entries ...func(b *narBuilder)) []byte {
		var b narBuilder
		b.str(narMagic, "(", "type", "directory")
		for _, e := range entries {
			e(&b)
		}
		b.str(")")
		return b.Bytes()
	}
	fileEntry := func(name string) func(b *narBuilder) {
		return func(b *narBuilder) {
			b.str("entry", "(", "name", name, "node").file("data").str(")")
		}
	}
	m := map[string][]byte{
		"slash":      dir(fileEntry("a/b")),
		"dotdot":     dir(fileEntry("..")),
		"dot":        dir(fileEntry(".")),
		"nul":        dir(fileEntry("a\x00b")),
		"empty name": dir(fileEntry("")),
		"duplicate":  dir(fileEntry("a"), fileEntry("a")),
		"unsorted":   dir(fileEntry("b"), fileEntry("a")),
		"symlink then entry under it": dir(
			func(b *narBuilder) {
				b.str("entry", "(", "name", "a", "node", "(", "type", "symlink", "target", "../../OUTSIDE", ")", ")")
			},
			func(b *narBuilder) {
				b.str("entry", "(", "name", "a", "node", "(", "type", "directory")
				fileEntry("planted")(b)
				b.str(")", ")")
			}),
		"unknown type":  (&narBuilder{}).str(narMagic, "(", "type", "fifo", ")").Bytes(),
		"unknown token": (&narBuilder{}).str(narMagic, "(", "type", "regular", "mode", "x", ")").Bytes(),
		"bad magic":     (&narBuilder{}).str("nix-archive-2").file("x").Bytes(),
		"empty target":  (&narBuilder{}).str(narMagic, "(", "type", "symlink", "target", "", ")").Bytes(),
		"huge length":   (&narBuilder{}).str(narMagic, "(", "type", "directory", "entry", "(", "name").int(1 << 40).Bytes(),
	}
	good := (&narBuilder{}).str(narMagic).file("abc").Bytes()
	m["trailing garbage"] = append(good[:len(good):len(good)], "garbage!"...)
	// Non-zero padding after "abc" (3 bytes, then 5 of padding).
	bad := bytes.Clone(good)
	i := bytes.Index(bad, []byte("abc"))
	bad[i+4] = 1
	m["non-zero padding"] = bad
	m["truncated contents"] = (&narBuilder{}).str(narMagic, "(", "type", "regular", "contents").int(100).Bytes()
	return m
}

func TestRestoreRefusesHostileInput(t *testing.T) {
	for name, nar := range hostileNars() {
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			parent := filepath.Join(tmp, "parent")
			outside := filepath.Join(tmp, "OUTSIDE")
			for _, d := range []string{parent, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// The symlink case points at tmp/OUTSIDE from parent/out/a.
			err := Restore(bytes.NewReader(nar), filepath.Join(parent, "out"))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidArchive) {
				t.Errorf("error does not wrap ErrInvalidArchive: %v", err)
			}
			t.Log(err)
			assertEmptyDir(t, parent)
			assertEmptyDir(t, outside)
		})
	}
}

// TestRestoreRefusesEveryTruncation cuts a varied nar at every token boundary and in
// the middle of file contents.
func TestRestoreRefusesEveryTruncation(t *testing.T) {
	tmp := t.TempDir()
	src := filepath.Join(tmp, "src")
	for _, d := range []string{"src/d/e", "parent"} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(src, "d/e/f"), []byte("0123456789"), 0o755)
	os.Symlink("d/e/f", filepath.Join(src, "l"))
	var nar bytes.Buffer
	if err := Dump(&nar, src); err != nil {
		t.Fatal(err)
	}
	full := nar.Bytes()
	for n := 0; n < len(full); n += 3 {
		err := Restore(bytes.NewReader(full[:n]), filepath.Join(tmp, "parent", "out"))
		if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("prefix of %d bytes: %v", n, err)
		}
		assertEmptyDir(t, filepath.Join(tmp, "parent"))
	}
}

// TestNarParserReadsNoFurther checks the parser stops exactly at the end of the nar, which
// the bundle reader depends on.
func TestNarParserReadsNoFurther(t *testing.T) {
	var b narBuilder
	b.str(narMagic, "(", "type", "directory", "entry", "(", "name", "f", "node").file("hello").str(")", ")")
	narLen := b.Len()
	b.WriteString("NEXT")
	r := bytes.NewReader(b.Bytes())
	p := narParser{w: &wireReader{r: r}, sink: &discardSink{buf: make([]byte, 16)}}
	if err := p.parse(-1, ""); err != nil {
		t.Fatal(err)
	}
	if p.w.n != int64(narLen) {
		t.Fatalf("consumed %d bytes, nar is %d", p.w.n, narLen)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "NEXT" {
		t.Fatalf("read past the nar: %q left", rest)
	}
}

func TestDumpRefusesSpecialFiles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Dump(io.Discard, p); err == nil || !strings.Contains(err.Error(), "unsupported file type") {
		t.Fatalf("got %v", err)
	}
}

func TestDumpStreamsLargeFile(t *testing.T) {
	// The dump of a large file must hash the same as the file streamed by hand.
	p := filepath.Join(t.TempDir(), "f")
	f, _ := os.Create(p)
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 1<<20)
	for range 5 {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		f.Write(buf)
	}
	f.Close()
	h := sha256.New()
	if err := Dump(h, p); err != nil {
		t.Fatal(err)
	}
	var want narBuilder
	want.str(narMagic, "(", "type", "regular", "contents").int(5 << 20)
	h2 := sha256.New()
	h2.Write(want.Bytes())
	data, _ := os.ReadFile(p)
	h2.Write(data)
	h2.Write((&narBuilder{}).str(")").Bytes())
	if !bytes.Equal(h.Sum(nil), h2.Sum(nil)) {
		t.Fatal("dump of a 5 MiB file differs from the format")
	}
}

// nestedDirsNar is a nar of depth directories nested in one another (the root is the
// first), the innermost holding one file.
func nestedDirsNar(depth int) []byte {
	var b narBuilder
	b.str(narMagic)
	for i := range depth {
		b.str("(", "type", "directory")
		if i < depth-1 {
			b.str("entry", "(", "name", "d", "node")
		}
	}
	b.str("entry", "(", "name", "f", "node").file("deep").str(")")
	for i := range depth {
		b.str(")") // the directory
		if i < depth-1 {
			b.str(")") // the entry holding it
		}
	}
	return b.Bytes()
}

// TestRestoreDepthLimit: maxDepth nested directories are restored; one more is refused
// with our own message, and nothing is left behind.
func TestRestoreDepthLimit(t *testing.T) {
	parent := t.TempDir()
	ok := filepath.Join(parent, "ok")
	if err := Restore(bytes.NewReader(nestedDirsNar(maxDepth)), ok); err != nil {
		t.Fatalf("%d nested directories refused: %v", maxDepth, err)
	}
	if _, err := os.Stat(filepath.Join(ok, strings.Repeat("d/", maxDepth-1), "f")); err != nil {
		t.Fatalf("the innermost file is missing: %v", err)
	}
	if err := removeTree(ok); err != nil {
		t.Fatal(err)
	}

	for _, depth := range []int{maxDepth + 1, 4 * maxDepth} {
		err := Restore(bytes.NewReader(nestedDirsNar(depth)), filepath.Join(parent, "deep"))
		if err == nil {
			t.Fatalf("%d nested directories accepted", depth)
		}
		want := fmt.Sprintf("directories nested deeper than %d", maxDepth)
		if !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), want) {
			t.Errorf("depth %d: error %v, want ErrInvalidArchive and %q", depth, err, want)
		}
		assertEmptyDir(t, parent)
		// The structural check alone (no file system) refuses it too.
		if _, err := ListBundle(bytes.NewReader(append(append((&narBuilder{}).int(1).Bytes(), nestedDirsNar(depth)...),
			(&narBuilder{}).int(0x4558494e).str(goodPath).int(0).str("").int(0).int(0).Bytes()...))); !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), want) {
			t.Errorf("depth %d: ListBundle: %v, want %q", depth, err, want)
		}
	}
}

// TestRestoreNeverWritesThroughASymlink restores a directory nar onto a target that is
// an existing symlink to a directory: the restore must refuse, and nothing may appear in
// the directory the symlink points to (the Mkdirat that must not accept EEXIST, and the
// O_NOFOLLOW opens, guard this).
func TestRestoreNeverWritesThroughASymlink(t *testing.T) {
	tmp := t.TempDir()
	victim := filepath.Join(tmp, "victim")
	if err := os.Mkdir(victim, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(tmp, "target")
	if err := os.Symlink(victim, target); err != nil {
		t.Fatal(err)
	}
	var nar narBuilder
	nar.str(narMagic, "(", "type", "directory", "entry", "(", "name", "planted", "node").file("owned").str(")", ")")
	if err := Restore(bytes.NewReader(nar.Bytes()), target); err == nil {
		t.Fatal("restored a directory through an existing symlink")
	}
	entries, err := os.ReadDir(victim)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("the restore wrote through the symlink: %s holds %v", victim, entries)
	}
	if fi, err := os.Lstat(target); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the existing symlink was replaced or removed: %v %v", fi, err)
	}
}
