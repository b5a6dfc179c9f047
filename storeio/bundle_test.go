package storeio

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const vecStore = "/gnu/store"

// itemsInfo parses vectors/bundles/items-info.txt: path -> nar hash (base32), size, refs.
func itemsInfo(t testing.TB) map[string][3]string {
	t.Helper()
	m := map[string][3]string{}
	sc := bufio.NewScanner(bytes.NewReader(vector(t, "bundles/items-info.txt")))
	var cur string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && strings.HasPrefix(f[1], "/"):
			cur = f[1]
		case len(f) >= 4 && f[0] == "nar-hash":
			e := m[cur]
			e[0], e[1] = strings.TrimPrefix(f[1], "sha256:"), f[4]
			m[cur] = e
		case len(f) >= 1 && f[0] == "references:":
			e := m[cur]
			e[2] = strings.Trim(strings.Join(f[1:], " "), "()")
			m[cur] = e
		}
	}
	if len(m) != 3 {
		t.Fatalf("items-info.txt: parsed %d items", len(m))
	}
	return m
}

func TestListBundleMatchesDaemon(t *testing.T) {
	info := itemsInfo(t)
	for _, which := range []string{"a", "b"} {
		for _, it := range vectorItems(t, which) {
			want, ok := info[it.Path]
			if !ok {
				t.Fatalf("unexpected item %s", it.Path)
			}
			if got := NixBase32(it.NarHash[:]); got != want[0] {
				t.Errorf("%s: nar hash %s, daemon says %s", it.Path, got, want[0])
			}
			if strconv.FormatInt(it.NarSize, 10) != want[1] {
				t.Errorf("%s: nar size %d, daemon says %s", it.Path, it.NarSize, want[1])
			}
			if strings.Join(it.References, " ") != want[2] {
				t.Errorf("%s: references %q, daemon says %q", it.Path, it.References, want[2])
			}
			if it.Deriver != "" || it.Signature == nil {
				t.Errorf("%s: deriver %q signature %v", it.Path, it.Deriver, it.Signature != nil)
			}
		}
	}
}

func TestVerifyBundleVectors(t *testing.T) {
	acl := vectorACL(t)
	var out bytes.Buffer
	if err := VerifyBundle(bytes.NewReader(vector(t, "bundles/a/export.nar")), acl, &out); err != nil {
		t.Fatalf("a: %v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), ": ok\n"); n != 3 {
		t.Errorf("a: %q", out.String())
	}
	out.Reset()
	if err := VerifyBundle(bytes.NewReader(vector(t, "bundles/b/export.nar")), acl, &out); err == nil {
		t.Fatal("b verified")
	}
	if n := strings.Count(out.String(), ": unauthorized public key\n"); n != 3 {
		t.Errorf("b: %q", out.String())
	}
}

func sha256Sum(b []byte) [32]byte {
	var s [32]byte
	h := newSHA256()
	h.Write(b)
	h.Sum(s[:0])
	return s
}

// testStore is a store of test items: a logical dir and a physical one.
type testStore struct {
	logical string
	src     string // where the items' contents live
	key     *SecretKey
	acl     *ACL
}

func newTestStore(t testing.TB) *testStore {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	acl := &ACL{}
	acl.Add(k.Public())
	ts := &testStore{logical: "/gnu/store", src: t.TempDir(), key: k, acl: acl}
	ts.file(t, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-one", "one")
	os.MkdirAll(filepath.Join(ts.src, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-two/bin"), 0o755)
	os.WriteFile(filepath.Join(ts.src, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-two/bin/two"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("bin/two", filepath.Join(ts.src, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-two/link"))
	return ts
}

func (ts *testStore) file(t testing.TB, base, contents string) {
	if err := os.WriteFile(filepath.Join(ts.src, base), []byte(contents), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (ts *testStore) path(base string) string { return ts.logical + "/" + base }

// bundle exports the named items (base names) with key (nil = unsigned).
func (ts *testStore) bundle(t testing.TB, key *SecretKey, infos ...ItemInfo) []byte {
	t.Helper()
	var buf bytes.Buffer
	bw := NewBundleWriter(&buf, key)
	for _, info := range infos {
		if err := bw.Add(filepath.Join(ts.src, filepath.Base(info.Path)), info); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (ts *testStore) items() []ItemInfo {
	one := ts.path("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-one")
	return []ItemInfo{
		{Path: one},
		{Path: ts.path("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-two"), References: []string{one}, Deriver: ts.path("cccccccccccccccccccccccccccccccc-two.drv")},
	}
}

func TestSignedBundleRoundTrip(t *testing.T) {
	ts := newTestStore(t)
	b := ts.bundle(t, ts.key, ts.items()...)
	listed, err := ListBundle(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 2 || !slices.Equal(listed[1].References, ts.items()[1].References) || listed[1].Deriver != ts.items()[1].Deriver {
		t.Fatalf("listed %+v", listed)
	}
	store := t.TempDir()
	items, err := ImportBundle(bytes.NewReader(b), ImportOptions{StoreDir: ts.logical, RealDir: store, ACL: ts.acl,
		Allowed: []string{ts.items()[0].Path, ts.items()[1].Path}})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 {
		t.Fatalf("%d items", len(items))
	}
	for _, it := range ts.items() {
		base := filepath.Base(it.Path)
		compareTrees(t, readTree(t, filepath.Join(ts.src, base)), readTree(t, filepath.Join(store, base)))
	}
}

// TestBundleMatchesNixExport checks our writer against nix-store --export of the same
// item, and that ListBundle and ImportBundle read Nix's output.
func TestBundleMatchesNixExport(t *testing.T) {
	nix := nixStore(t)
	tmp := t.TempDir()
	env := append(os.Environ(), "NIX_STORE_DIR="+tmp+"/store", "NIX_STATE_DIR="+tmp+"/state", "NIX_LOG_DIR="+tmp+"/log")
	src := filepath.Join(tmp, "src")
	makeVariedTree(t, src)
	run := func(stdin io.Reader, args ...string) []byte {
		cmd := exec.Command(nix, args...)
		cmd.Env, cmd.Stdin = env, stdin
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("nix-store %v: %v: %s", args, err, stderr.String())
		}
		return out
	}
	p := strings.TrimSpace(string(run(nil, "--add", src)))
	export := run(nil, "--export", p)
	items, err := ListBundle(bytes.NewReader(export))
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].Path != p || items[0].Signature != nil {
		t.Fatalf("items %+v", items)
	}
	hash := strings.TrimSpace(string(run(nil, "--query", "--hash", p)))
	if got := "sha256:" + NixBase32(items[0].NarHash[:]); got != hash {
		t.Errorf("nar hash %s, nix says %s", got, hash)
	}
	size := strings.TrimSpace(string(run(nil, "--query", "--size", p)))
	if strconv.FormatInt(items[0].NarSize, 10) != size {
		t.Errorf("nar size %d, nix says %s", items[0].NarSize, size)
	}
	// Our unsigned bundle of the same item is byte-identical.
	var ours bytes.Buffer
	bw := NewBundleWriter(&ours, nil)
	if err := bw.Add(p, ItemInfo{Path: p}); err != nil {
		t.Fatal(err)
	}
	bw.Close()
	if !bytes.Equal(ours.Bytes(), export) {
		t.Errorf("our export (%d bytes) differs from nix-store --export (%d bytes)", ours.Len(), len(export))
	}
	// We import Nix's bundle.
	real := filepath.Join(tmp, "real")
	os.Mkdir(real, 0o755)
	if _, err := ImportBundle(bytes.NewReader(export), ImportOptions{StoreDir: tmp + "/store", RealDir: real}); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, readTree(t, src), readTree(t, filepath.Join(real, filepath.Base(p))))
}
