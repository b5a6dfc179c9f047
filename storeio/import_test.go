package storeio

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestImportVectorBundle(t *testing.T) {
	store := t.TempDir()
	var log bytes.Buffer
	items, err := ImportBundle(bytes.NewReader(vector(t, "bundles/a/export.nar")),
		ImportOptions{StoreDir: vecStore, RealDir: store, ACL: vectorACL(t), Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 || strings.Count(log.String(), "importing file or directory") != 3 {
		t.Fatalf("items %d, log %q", len(items), log.String())
	}
	dir := filepath.Join(store, "2n0css2k7m7jcsmnzbsixzq6nzicqspj-vec-dir")
	tree := readTree(t, dir)
	if tree["bin/hello"].Type != "exec" || tree["hello-link"] != (treeEntry{"link", "bin/hello"}) || tree["share/doc/README"].Type != "file" {
		t.Errorf("vec-dir restored wrong: %v", tree)
	}
	// Restored trees dump back to the very nar the daemon hashed.
	info := itemsInfo(t)
	for _, it := range items {
		var nar bytes.Buffer
		if err := Dump(&nar, filepath.Join(store, filepath.Base(it.Path))); err != nil {
			t.Fatal(err)
		}
		sum := sha256Sum(nar.Bytes())
		if NixBase32(sum[:]) != info[it.Path][0] {
			t.Errorf("%s: dump of restored item does not hash as the daemon's", it.Path)
		}
	}
	if got := listDir(t, store); len(got) != 3 {
		t.Errorf("store holds %v", got)
	}
}

func TestImportRefusesUnauthorizedVectorBundle(t *testing.T) {
	store := t.TempDir()
	_, err := ImportBundle(bytes.NewReader(vector(t, "bundles/b/export.nar")),
		ImportOptions{StoreDir: vecStore, RealDir: store, ACL: vectorACL(t)})
	if !errors.Is(err, ErrUnauthorizedKey) {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "unauthorized public key") {
		t.Errorf("message: %v", err)
	}
	assertEmptyDir(t, store)
}

func TestImportRefusesTamperedVectorBundle(t *testing.T) {
	b := bytes.Clone(vector(t, "bundles/a/export.nar"))
	i := bytes.Index(b, []byte("Hello, test vectors!"))
	b[i] = 'J'
	store := t.TempDir()
	_, err := ImportBundle(bytes.NewReader(b), ImportOptions{StoreDir: vecStore, RealDir: store, ACL: vectorACL(t)})
	if !errors.Is(err, ErrInvalidHash) {
		t.Fatalf("got %v", err)
	}
	assertEmptyDir(t, store)
	var out bytes.Buffer
	if err := VerifyBundle(bytes.NewReader(b), vectorACL(t), &out); err == nil || !strings.Contains(out.String(), "vec-plain.txt: invalid hash\n") {
		t.Fatalf("verify: %v %q", err, out.String())
	}
}

// rawItem builds one bundle item by hand (without the leading int 1).
func rawItem(nar []byte, path string, refs []string, sig []byte) []byte {
	var b narBuilder
	b.Write(nar)
	b.int(0x4558494e).str(path).int(uint64(len(refs))).str(refs...).str("")
	if sig == nil {
		b.int(0)
	} else {
		b.int(1).str(string(sig))
	}
	return b.Bytes()
}

func rawBundle(items ...[]byte) []byte {
	var b narBuilder
	for _, it := range items {
		b.int(1)
		b.Write(it)
	}
	b.int(0)
	return b.Bytes()
}

const (
	goodPath = "/gnu/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-good"
	badPath  = "/gnu/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-bad"
)

// TestImportRefusesHostileBundles: every refusal leaves the good first item in place and
// nothing else: no temporary, no partial item.
func TestImportRefusesHostileBundles(t *testing.T) {
	goodNar := (&narBuilder{}).str(narMagic).file("good").Bytes()
	good := rawItem(goodNar, goodPath, nil, nil)
	plainNar := (&narBuilder{}).str(narMagic).file("bad").Bytes()

	key, _ := GenerateKey()
	acl := &ACL{}
	acl.Add(key.Public())
	stranger, _ := GenerateKey()
	// Signed items need their hash: write them with BundleWriter from files.
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "good"), []byte("good"), 0o644)
	os.WriteFile(filepath.Join(src, "bad"), []byte("bad"), 0o644)
	signedBundle := func(k *SecretKey, info ItemInfo, file string) []byte {
		// The first item is always signed by the authorized key; two writers share
		// the stream, one per item.
		var buf bytes.Buffer
		if err := NewBundleWriter(&buf, key).Add(filepath.Join(src, "good"), ItemInfo{Path: goodPath}); err != nil {
			t.Fatal(err)
		}
		bw := NewBundleWriter(&buf, k)
		if err := bw.Add(filepath.Join(src, file), info); err != nil {
			t.Fatal(err)
		}
		bw.Close()
		return buf.Bytes()
	}
	// A genuine signature by the authorized key, but over another item's data.
	var other bytes.Buffer
	obw := NewBundleWriter(&other, key)
	obw.Add(filepath.Join(src, "good"), ItemInfo{Path: badPath})
	obw.Close()
	sigOverOther := obw.Items()[0].Signature

	hostile := hostileNars()
	narCase := func(name string) []byte {
		// hostileNars are whole streams for Restore; in a bundle the nar is followed by
		// the trailer.
		return rawBundle(good, rawItem(hostile[name], badPath, nil, nil))
	}
	cases := []struct {
		name   string
		bundle []byte
		acl    *ACL
		opts   func(*ImportOptions)
		want   error
		// both: the second item was complete before the error, so it stays too.
		both bool
	}{
		{"slash", narCase("slash"), nil, nil, ErrInvalidArchive, false},
		{"dotdot", narCase("dotdot"), nil, nil, ErrInvalidArchive, false},
		{"dot", narCase("dot"), nil, nil, ErrInvalidArchive, false},
		{"nul", narCase("nul"), nil, nil, ErrInvalidArchive, false},
		{"empty name", narCase("empty name"), nil, nil, ErrInvalidArchive, false},
		{"duplicate", narCase("duplicate"), nil, nil, ErrInvalidArchive, false},
		{"unsorted", narCase("unsorted"), nil, nil, ErrInvalidArchive, false},
		{"symlink then entry under it", narCase("symlink then entry under it"), nil, nil, ErrInvalidArchive, false},
		{"unknown token", narCase("unknown token"), nil, nil, ErrInvalidArchive, false},
		{"bad padding", narCase("non-zero padding"), nil, nil, ErrInvalidArchive, false},
		{"truncated in nar", rawBundle(good, rawItem(plainNar, badPath, nil, nil))[:len(good)+8+40], nil, nil, ErrInvalidArchive, false},
		{"truncated in trailer", rawBundle(good, rawItem(plainNar, badPath, nil, nil))[:len(good)+8+len(plainNar)+20], nil, nil, ErrInvalidArchive, false},
		{"truncated before end marker", rawBundle(good, rawItem(plainNar, badPath, nil, nil))[:len(good)+8+len(rawItem(plainNar, badPath, nil, nil))+8], nil, nil, ErrInvalidArchive, true},
		{"bad export magic", rawBundle(good, bytes.Replace(rawItem(plainNar, badPath, nil, nil), []byte("NIXE"), []byte("NIXF"), 1)), nil, nil, ErrInvalidArchive, false},
		{"bad item mark", append(append([]byte{}, rawBundle(good)[:8+len(good)]...), 2, 0, 0, 0, 0, 0, 0, 0), nil, nil, ErrInvalidArchive, false},
		{"path outside store", rawBundle(good, rawItem(plainNar, "/etc/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-bad", nil, nil)), nil, nil, ErrInvalidArchive, false},
		{"path with dotdot", rawBundle(good, rawItem(plainNar, "/gnu/store/../etc/passwd", nil, nil)), nil, nil, ErrInvalidArchive, false},
		{"path inside an item", rawBundle(good, rawItem(plainNar, goodPath+"/x", nil, nil)), nil, nil, ErrInvalidArchive, false},
		{"bad reference", rawBundle(good, rawItem(plainNar, badPath, []string{"/tmp/x"}, nil)), nil, nil, ErrInvalidArchive, false},
		{"not allowed", rawBundle(good, rawItem(plainNar, badPath, nil, nil)), nil, func(o *ImportOptions) { o.Allowed = []string{goodPath} }, ErrNotAllowed, false},
		{"unsigned", signedBundle(nil, ItemInfo{Path: badPath}, "bad"), acl, nil, ErrNoSignature, false},
		{"unknown key", signedBundle(stranger, ItemInfo{Path: badPath}, "bad"), acl, nil, ErrUnauthorizedKey, false},
		{"signature over other data", signedBundle(nil, ItemInfo{Path: badPath, Signature: sigOverOther}, "bad"), acl, nil, ErrInvalidHash, false},
		{"corrupt signature", signedBundle(nil, ItemInfo{Path: badPath, Signature: []byte("(signature")}, "bad"), acl, nil, ErrCorruptSignature, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store := t.TempDir()
			opt := ImportOptions{StoreDir: "/gnu/store", RealDir: store, ACL: tc.acl}
			if tc.opts != nil {
				tc.opts(&opt)
			}
			done, err := ImportBundle(bytes.NewReader(tc.bundle), opt)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			t.Log(err)
			// All or nothing: the good first item does not stay either, and no
			// temporary is left.
			if got := listDir(t, store); len(got) != 0 {
				t.Errorf("store holds %q, want nothing", got)
			}
			if len(done) != 0 {
				t.Errorf("%d items reported done", len(done))
			}
		})
	}
}

func TestImportRefusesTrailingGarbage(t *testing.T) {
	goodNar := (&narBuilder{}).str(narMagic).file("good").Bytes()
	b := append(rawBundle(rawItem(goodNar, goodPath, nil, nil)), "junk"...)
	store := t.TempDir()
	_, err := ImportBundle(bytes.NewReader(b), ImportOptions{StoreDir: "/gnu/store", RealDir: store})
	if !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), "trailing data") {
		t.Fatalf("got %v", err)
	}
	for _, n := range listDir(t, store) {
		if strings.HasPrefix(n, TempPrefix) {
			t.Errorf("left behind: %s", n)
		}
	}
	if _, err := ListBundle(bytes.NewReader(b)); err == nil {
		t.Error("ListBundle accepted trailing garbage")
	}
}

func TestImportLeavesExistingPathAlone(t *testing.T) {
	goodNar := (&narBuilder{}).str(narMagic).file("new contents").Bytes()
	nextNar := (&narBuilder{}).str(narMagic).file("next").Bytes()
	b := rawBundle(rawItem(goodNar, goodPath, nil, nil), rawItem(nextNar, badPath, nil, nil))
	store := t.TempDir()
	existing := filepath.Join(store, filepath.Base(goodPath))
	os.WriteFile(existing, []byte("old contents"), 0o644)
	done, err := ImportBundle(bytes.NewReader(b), ImportOptions{StoreDir: "/gnu/store", RealDir: store})
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 2 {
		t.Fatalf("%d items reported", len(done))
	}
	if got, _ := os.ReadFile(existing); string(got) != "old contents" {
		t.Errorf("existing path replaced: %q", got)
	}
	// Its nar was consumed: the next item was read correctly.
	if got, _ := os.ReadFile(filepath.Join(store, filepath.Base(badPath))); string(got) != "next" {
		t.Errorf("next item: %q", got)
	}
	if n := len(listDir(t, store)); n != 2 {
		t.Errorf("store holds %v", listDir(t, store))
	}
}

func TestImportUnsignedWithoutACL(t *testing.T) {
	goodNar := (&narBuilder{}).str(narMagic).file("good").Bytes()
	store := t.TempDir()
	b := rawBundle(rawItem(goodNar, goodPath, nil, nil))
	if _, err := ImportBundle(bytes.NewReader(b), ImportOptions{StoreDir: "/gnu/store", RealDir: store}); err != nil {
		t.Fatal(err)
	}
	// The same bundle is refused when an ACL is in force.
	store2 := t.TempDir()
	if _, err := ImportBundle(bytes.NewReader(b), ImportOptions{StoreDir: "/gnu/store", RealDir: store2, ACL: &ACL{}}); !errors.Is(err, ErrNoSignature) {
		t.Fatalf("got %v", err)
	}
	assertEmptyDir(t, store2)
}

// TestImportReplace: with Replace, junk at a requested path (left by a crash) is
// replaced by the verified item; without it, the existing path is left alone.
func TestImportReplace(t *testing.T) {
	goodNar := (&narBuilder{}).str(narMagic).file("good").Bytes()
	b := rawBundle(rawItem(goodNar, goodPath, nil, nil))
	for _, replace := range []bool{false, true} {
		store := t.TempDir()
		final := filepath.Join(store, filepath.Base(goodPath))
		if err := os.WriteFile(final, []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ImportBundle(bytes.NewReader(b), ImportOptions{StoreDir: "/gnu/store", RealDir: store, Replace: replace}); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(final)
		want := "junk"
		if replace {
			want = "good"
		}
		if string(got) != want {
			t.Errorf("replace=%v: %q, want %q", replace, got, want)
		}
		if names := listDir(t, store); len(names) != 1 {
			t.Errorf("replace=%v: store holds %q", replace, names)
		}
	}
}

// TestImportRefusesDuplicatePath: the same path twice in one bundle is refused.
func TestImportRefusesDuplicatePath(t *testing.T) {
	goodNar := (&narBuilder{}).str(narMagic).file("good").Bytes()
	b := rawBundle(rawItem(goodNar, goodPath, nil, nil), rawItem(goodNar, goodPath, nil, nil))
	store := t.TempDir()
	if _, err := ImportBundle(bytes.NewReader(b), ImportOptions{StoreDir: "/gnu/store", RealDir: store}); !errors.Is(err, ErrInvalidArchive) {
		t.Fatalf("got %v", err)
	}
	if names := listDir(t, store); len(names) != 0 {
		t.Errorf("store holds %q", names)
	}
}

// TestCleanStaleTemps: a dead importer's temporary directory is removed; a live one's
// (ours) and anything else are left alone.
func TestCleanStaleTemps(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("%s%d-abc", TempPrefix, cmd.Process.Pid) // exited and reaped
	live := fmt.Sprintf("%s%d-def", TempPrefix, os.Getpid())
	for _, n := range []string{dead, live, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-item", TempPrefix + "nopid"} {
		if err := os.MkdirAll(filepath.Join(dir, n, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(dir, dead), 0o555) // as restored: read-only
	removed, err := CleanStaleTemps(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != dead {
		t.Fatalf("removed %q, want only %q", removed, dead)
	}
	if got := listDir(t, dir); len(got) != 3 {
		t.Errorf("left %q", got)
	}
}

func TestIsRefusal(t *testing.T) {
	goodNar := (&narBuilder{}).str(narMagic).file("good").Bytes()
	_, err := ImportBundle(bytes.NewReader(rawBundle(rawItem(goodNar, goodPath, nil, nil))), ImportOptions{StoreDir: "/gnu/store", RealDir: t.TempDir(), Allowed: []string{"/gnu/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-x"}})
	if !IsRefusal(err) {
		t.Errorf("not-allowed path: IsRefusal(%v) = false", err)
	}
	// A store directory we cannot write to: a local failure, not the archive's fault.
	_, err = ImportBundle(bytes.NewReader(rawBundle(rawItem(goodNar, goodPath, nil, nil))), ImportOptions{StoreDir: "/gnu/store", RealDir: filepath.Join(t.TempDir(), "missing")})
	if err == nil || IsRefusal(err) {
		t.Errorf("unwritable store: IsRefusal(%v) = true", err)
	}
}

// TestImportRefusesMalformedDeriver: an item whose deriver is not a store path is
// refused, although it is properly signed by an authorized key over the right hash (so
// the deriver check is the only one that can refuse it), and nothing is left behind.
func TestImportRefusesMalformedDeriver(t *testing.T) {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	acl := &ACL{}
	acl.Add(key.Public())
	src := filepath.Join(t.TempDir(), "good")
	if err := os.WriteFile(src, []byte("good"), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := func(deriver string) []byte {
		var buf bytes.Buffer
		bw := NewBundleWriter(&buf, key)
		if err := bw.Add(src, ItemInfo{Path: goodPath, Deriver: deriver}); err != nil {
			t.Fatal(err)
		}
		if err := bw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	// The same item with a well-formed deriver is accepted: only the deriver differs.
	okDeriver := "/gnu/store/cccccccccccccccccccccccccccccccc-good.drv"
	if _, err := ImportBundle(bytes.NewReader(bundle(okDeriver)), ImportOptions{StoreDir: "/gnu/store", RealDir: t.TempDir(), ACL: acl, Allowed: []string{goodPath}}); err != nil {
		t.Fatalf("well-formed deriver refused: %v", err)
	}
	for _, deriver := range []string{
		"/etc/passwd",
		"/gnu/store/../etc/passwd.drv",
		"/gnu/store/cccccccccccccccccccccccccccccccc-good.drv/x",
		"/gnu/store/short-good.drv",
		"/gnu/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-bad-hash-part.drv",
		"/gnu/store/cccccccccccccccccccccccccccccccc-bad name\n.drv",
		"--foo",
		"relative/cccccccccccccccccccccccccccccccc-good.drv",
	} {
		t.Run(deriver, func(t *testing.T) {
			b := bundle(deriver)
			// Correctly signed: the signature check alone would accept it.
			listed, err := ListBundle(bytes.NewReader(b))
			if err != nil || len(listed) != 1 || listed[0].Deriver != deriver {
				t.Fatalf("listed %+v, %v", listed, err)
			}
			if _, err := VerifySignature(listed[0].Signature, listed[0].Hash, acl); err != nil {
				t.Fatalf("the test bundle is not properly signed: %v", err)
			}
			store := t.TempDir()
			done, err := ImportBundle(bytes.NewReader(b), ImportOptions{StoreDir: "/gnu/store", RealDir: store, ACL: acl, Allowed: []string{goodPath}})
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrInvalidArchive) || !strings.Contains(err.Error(), "deriver") {
				t.Errorf("error %v, want ErrInvalidArchive about the deriver", err)
			}
			if len(done) != 0 {
				t.Errorf("%d items reported done", len(done))
			}
			assertEmptyDir(t, store)
		})
	}
}
