package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"offload/integration/drv"
	"offload/integration/subst"
	"offload/storeio"
)

// substFixture is a daemon with a substitute server whose substitutes are items of a
// second store (same logical directory), signed by a key the daemon's ACL authorizes.
// With told false the server's directory is filled all the same, but the daemon is not
// given it.
type substFixture struct {
	*fixture
	server subst.Server
	other  drv.Store
	key    *storeio.SecretKey
}

func newSubstFixture(t *testing.T, told bool) *substFixture {
	dir := t.TempDir()
	env := map[string]string{"FAKEGUIX_SUBSTITUTES": dir}
	if !told {
		env = nil
	}
	f := newFixture(t, env)
	other := drv.Store{Logical: f.store.Logical, Physical: filepath.Join(t.TempDir(), "store"), DB: filepath.Join(t.TempDir(), "db")}
	key, err := storeio.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	f.authorize(key.Public())
	return &substFixture{fixture: f, server: subst.Server(dir), other: other, key: key}
}

// serverItem makes an item in the other store; with key set, it gets a substitute
// signed by key, recording deriver.
func (sf *substFixture) serverItem(name, content string, key *storeio.SecretKey, deriver string) string {
	t := sf.t
	t.Helper()
	p, err := sf.other.AddItem(name, map[string]string{"": content})
	if err != nil {
		t.Fatal(err)
	}
	if key == nil {
		return p
	}
	info, _ := sf.other.Info(p)
	real, _ := sf.other.Real(p)
	var b bytes.Buffer
	bw := storeio.NewBundleWriter(&b, key)
	if err := bw.Add(real, storeio.ItemInfo{Path: p, References: info.References, Deriver: deriver}); err != nil {
		t.Fatal(err)
	}
	bw.Close()
	if err := os.WriteFile(sf.server.File(p), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// offer makes an item with a good substitute.
func (sf *substFixture) offer(name, content string) string {
	return sf.serverItem(name, content, sf.key, "")
}

// truncate breaks p's substitute: half of it, still there to be fetched.
func (sf *substFixture) truncate(p string) {
	fi, err := os.Stat(sf.server.File(p))
	if err == nil {
		err = os.Truncate(sf.server.File(p), fi.Size()/2)
	}
	if err != nil {
		sf.t.Fatal(err)
	}
}

// build sends BuildPaths (normal mode) and returns its STDERR loop and, after
// STDERR_LAST, the reply's integer.
func (c *client) build(paths ...string) (reply, uint64) {
	c.t.Helper()
	c.int(9).strs(paths...).int(0).send()
	r := c.loop(nil)
	if r.err != "" {
		return r, 0
	}
	return r, c.readInt()
}

// noTrace checks that the store holds nothing of the items, valid or not: no path, no
// db entry, no temporary left by an import.
func (sf *substFixture) noTrace(items ...string) {
	t := sf.t
	t.Helper()
	for _, dir := range []string{sf.store.Physical, sf.store.DB} {
		es, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if strings.HasPrefix(e.Name(), storeio.TempPrefix) || strings.HasPrefix(e.Name(), ".workerd-tmp-") {
				t.Errorf("left in %s: %s", dir, e.Name())
			}
			for _, p := range items {
				if e.Name() == filepath.Base(p) {
					t.Errorf("left in %s: %s", dir, e.Name())
				}
			}
		}
	}
}

// With useSubstitutes, BuildPaths of an invalid plain item with a substitute fetches
// it, its references first, verified, and registers it with the references and deriver
// the substitute came with; the messages are the real daemon's.
func TestSubstituteFetches(t *testing.T) {
	sf := newSubstFixture(t, true)
	a := sf.offer("sub-a", "aaa")
	deriver := sf.store.Logical + "/" + strings.Repeat("1", 32) + "-sub-b.drv"
	b := sf.serverItem("sub-b", "uses "+a, sf.key, deriver)
	if info, _ := sf.other.Info(b); !slices.Equal(info.References, []string{a}) {
		t.Fatalf("test setup: references of b %q", info.References)
	}
	c := sf.connect()
	c.options(options{verbosity: lvlChatty, trace: true, useSubstitutes: true})
	r, ok := c.build(b)
	if r.err != "" || ok != 1 {
		t.Fatalf("BuildPaths: %+v", r)
	}
	for _, p := range []string{a, b} {
		if !sf.store.Valid(p) {
			t.Fatalf("%s is not valid after BuildPaths", p)
		}
		mine, _ := sf.store.Real(p)
		theirs, _ := sf.other.Real(p)
		if got, want := narOf(t, mine), narOf(t, theirs); !bytes.Equal(got, want) {
			t.Errorf("%s is not as on the server", p)
		}
	}
	if info, err := sf.store.Info(b); err != nil || !slices.Equal(info.References, []string{a}) || info.Deriver != deriver {
		t.Errorf("b registered as %+v (%v), want references %q and deriver %s", info, err, a, deriver)
	}
	want := "fetching path `" + a + "'...\n" +
		"@ substituter-started " + a + " substitute\n" +
		"substitution of path `" + a + "' succeeded\n" +
		"@ substituter-succeeded " + a + "\n" +
		"fetching path `" + b + "'...\n" +
		"@ substituter-started " + b + " substitute\n" +
		"substitution of path `" + b + "' succeeded\n" +
		"@ substituter-succeeded " + b + "\n"
	if r.log() != want {
		t.Errorf("messages:\n%s\nwant:\n%s", r.log(), want)
	}
	// Valid now: nothing to fetch, nothing said.
	if r, ok := c.build(a, b); r.err != "" || ok != 1 || len(r.next) != 0 {
		t.Errorf("again: %+v", r)
	}
	if roots := sf.tempRoots(); !slices.Contains(roots, a) || !slices.Contains(roots, b) {
		t.Errorf("temporary roots %q lack the fetched items", roots)
	}
}

// An item without a substitute is no failure, as with the real daemon (a derivation
// needing it would build it): it stays invalid and only a debug message names it. The
// same for an item one of whose references has no substitute (an incomplete closure).
// The other items are fetched.
func TestSubstituteNone(t *testing.T) {
	sf := newSubstFixture(t, true)
	none := sf.serverItem("sub-none", "no substitute", nil, "")
	good := sf.offer("sub-good", "good")
	incomplete := sf.offer("sub-incomplete", "uses "+none)
	c := sf.connect()
	c.options(options{verbosity: lvlDebug, useSubstitutes: true})
	r, ok := c.build(none, incomplete, good)
	if r.err != "" || ok != 1 {
		t.Fatalf("BuildPaths: %+v", r)
	}
	if !sf.store.Valid(good) {
		t.Errorf("%s was not fetched", good)
	}
	for _, p := range []string{none, incomplete} {
		if sf.store.Valid(p) {
			t.Errorf("%s is valid", p)
		}
	}
	sf.noTrace(none, incomplete)
	for _, want := range []string{
		"path `" + none + "' is required, but there is no substituter that can build it\n",
		"some references of path `" + incomplete + "' could not be realised\n",
	} {
		if !slices.Contains(r.next, want) {
			t.Errorf("no message %q in:\n%s", want, r.log())
		}
	}
	if strings.Contains(r.log(), "fetching path `"+incomplete) {
		t.Errorf("%s was fetched without its reference:\n%s", incomplete, r.log())
	}
}

// A substitute that fails to download (truncated; signed by a stranger) fails its
// item: BuildPaths answers the daemon's "build of ... failed", status 1, and the store
// keeps no trace of it, not even the stale bytes an earlier unregistered import left at
// its path.
func TestSubstituteBroken(t *testing.T) {
	sf := newSubstFixture(t, true)
	broken := sf.offer("sub-broken", strings.Repeat("x", 100_000))
	sf.truncate(broken)
	stranger, _ := storeio.GenerateKey() // not in the ACL
	foreign := sf.serverItem("sub-foreign", "foreign", stranger, "")
	stale, _ := sf.store.Real(broken)
	if err := os.WriteFile(stale, []byte("stale bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := sf.connect()
	c.options(options{verbosity: lvlInfo, trace: true, keepGoing: true, useSubstitutes: true})
	r, _ := c.build(broken, foreign)
	if want := "build of `" + broken + "', `" + foreign + "' failed"; r.err != want || r.status != 1 {
		t.Fatalf("BuildPaths: %q status %d, want %q status 1", r.err, r.status, want)
	}
	for _, p := range []string{broken, foreign} {
		if sf.store.Valid(p) {
			t.Errorf("%s is valid", p)
		}
	}
	sf.noTrace(broken, foreign)
	log := r.log()
	for _, want := range []string{
		"fetching path `" + broken + "'...\n",
		"@ substituter-started " + broken + " substitute\n",
		"fetching path `" + broken + "' (empty status)\n",
		"@ substituter-failed " + broken + "  fetching path `" + broken + "' (empty status)\n",
		"guix substitute: error: import " + foreign + ": unauthorized public key\n",
		"fetching path `" + foreign + "' (empty status)\n",
	} {
		if !slices.Contains(r.next, want) {
			t.Errorf("no message %q in:\n%s", want, log)
		}
	}
	if !strings.Contains(log, "guix substitute: error: import into ") {
		t.Errorf("the substituter's error on the truncated substitute is not forwarded:\n%s", log)
	}
	// The connection survives, and a good substitute of the item, once there, is
	// fetched.
	sf.serverItem("sub-broken", strings.Repeat("x", 100_000), sf.key, "")
	if r, ok := c.build(broken); r.err != "" || ok != 1 || !sf.store.Valid(broken) {
		t.Errorf("after the substitute is repaired: %+v, valid %v", r, sf.store.Valid(broken))
	}
}

// Without keepGoing the first failed item ends the request: the items after it are not
// tried. With it they all are, and the error names every failed one.
func TestSubstituteKeepGoing(t *testing.T) {
	sf := newSubstFixture(t, true)
	broken1 := sf.offer("sub-broken-1", strings.Repeat("1", 50_000))
	broken2 := sf.offer("sub-broken-2", strings.Repeat("2", 50_000))
	good1 := sf.offer("sub-good-1", "one")
	good2 := sf.offer("sub-good-2", "two")
	sf.truncate(broken1)
	sf.truncate(broken2)
	c := sf.connect()

	c.options(options{useSubstitutes: true})
	r, _ := c.build(broken1, good1, broken2)
	if want := "build of `" + broken1 + "' failed"; r.err != want || r.status != 1 {
		t.Fatalf("without keepGoing: %q status %d, want %q", r.err, r.status, want)
	}
	if sf.store.Valid(good1) {
		t.Errorf("without keepGoing, %s was fetched after a failure", good1)
	}

	c.options(options{keepGoing: true, useSubstitutes: true})
	r, _ = c.build(broken1, good1, broken2, good2)
	if want := "build of `" + broken1 + "', `" + broken2 + "' failed"; r.err != want || r.status != 1 {
		t.Fatalf("with keepGoing: %q status %d, want %q", r.err, r.status, want)
	}
	for _, p := range []string{good1, good2} {
		if !sf.store.Valid(p) {
			t.Errorf("with keepGoing, %s was not fetched", p)
		}
	}
	sf.noTrace(broken1, broken2)
}

// Without useSubstitutes, or without a substitute server, BuildPaths of a plain item
// fetches nothing, as before: the item stays invalid and it is no failure.
func TestSubstituteOff(t *testing.T) {
	sf := newSubstFixture(t, true)
	p := sf.offer("sub-off", "off")
	c := sf.connect()
	c.options(options{verbosity: lvlDebug, keepGoing: true})
	if r, ok := c.build(p); r.err != "" || ok != 1 || len(r.next) != 0 || sf.store.Valid(p) {
		t.Errorf("without useSubstitutes: %+v, valid %v", r, sf.store.Valid(p))
	}

	sf = newSubstFixture(t, false)
	p = sf.offer("sub-off", "off")
	c = sf.connect()
	c.options(options{verbosity: lvlDebug, keepGoing: true, useSubstitutes: true})
	if r, ok := c.build(p); r.err != "" || ok != 1 || len(r.next) != 0 || sf.store.Valid(p) {
		t.Errorf("without a substitute server: %+v, valid %v", r, sf.store.Valid(p))
	}
}

func narOf(t *testing.T, path string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := storeio.Dump(&b, path); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
