package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"offload/integration/drv"
	"offload/storeio"
)

var guixBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fakeguix-test-")
	if err != nil {
		panic(err)
	}
	guixBin = filepath.Join(dir, "guix")
	out, err := exec.Command("go", "build", "-o", guixBin, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// side is one fake store with its configuration directory and key.
type side struct {
	store drv.Store
	conf  string
	log   string
	key   *storeio.SecretKey
}

// newSides makes n stores sharing one logical store dir, each with its own
// physical dir, db, conf dir and signing key; none authorizes anyone.
func newSides(t *testing.T, n int) []*side {
	t.Helper()
	dir := t.TempDir()
	logical := filepath.Join(dir, "gnu", "store")
	var sides []*side
	for i := range n {
		base := filepath.Join(dir, "side"+strconv.Itoa(i))
		s := &side{store: drv.Store{Logical: logical, Physical: filepath.Join(base, "store"), DB: filepath.Join(base, "db")},
			conf: filepath.Join(base, "conf"), log: filepath.Join(base, "guix.log")}
		if i == 0 {
			s.store.Physical = logical // the local side: physical == logical
		}
		for _, d := range []string{s.store.Physical, s.conf} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		k, err := storeio.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		s.key = k
		os.WriteFile(filepath.Join(s.conf, "signing-key.sec"), k.MarshalText(), 0o600)
		os.WriteFile(filepath.Join(s.conf, "signing-key.pub"), k.Public().MarshalText(), 0o644)
		sides = append(sides, s)
	}
	return sides
}

// authorize makes s accept bundles signed by the keys of others.
func (s *side) authorize(t *testing.T, others ...*side) {
	t.Helper()
	acl, err := storeio.ParseACL([]byte("(acl)"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range others {
		acl.Add(o.key.Public())
	}
	if err := os.WriteFile(filepath.Join(s.conf, "acl"), acl.MarshalText(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *side) env(extra ...string) []string {
	return append(append(s.store.Env(), "GUIX_CONFIGURATION_DIRECTORY="+s.conf, "FAKEGUIX_LOG="+s.log, "PATH=/usr/bin:/bin"), extra...)
}

type result struct {
	stdout, stderr string
	status         int
}

func (s *side) guix(t *testing.T, stdin []byte, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(guixBin, args...)
	cmd.Env = s.env(env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{out.String(), errb.String(), 0}
	if ee, ok := err.(*exec.ExitError); ok {
		r.status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// addItem creates a valid item; files maps relative names to contents
// ("" key: the item is a single regular file); names ending in "*" are
// executable, contents starting with "->" make symlinks.
func (s *side) addItem(t *testing.T, name string, files map[string]string, refs ...string) string {
	t.Helper()
	var fp strings.Builder
	for k, v := range files {
		fp.WriteString(k + "=" + v + ";")
	}
	p := drv.StorePath(s.store.Logical, name+fp.String(), name)
	real, _ := s.store.Real(p)
	for rel, content := range files {
		mode := os.FileMode(0o444)
		if strings.HasSuffix(rel, "*") {
			rel, mode = strings.TrimSuffix(rel, "*"), 0o555
		}
		f := filepath.Join(real, rel)
		os.MkdirAll(filepath.Dir(f), 0o755)
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, f); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(f, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.store.Register(drv.Info{Path: p, References: refs}); err != nil {
		t.Fatal(err)
	}
	return p
}

func dump(t *testing.T, path string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := storeio.Dump(&b, path); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// storeEntries lists what is in a physical store dir and its db.
func storeEntries(t *testing.T, s drv.Store) []string {
	t.Helper()
	var names []string
	for _, d := range []string{s.Physical, s.DB} {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			names = append(names, filepath.Join(filepath.Base(d), e.Name()))
		}
	}
	return names
}

func TestExportImportRoundTrip(t *testing.T) {
	sides := newSides(t, 2)
	a, b := sides[0], sides[1]
	b.authorize(t, a)
	plain := a.addItem(t, "plain.txt", map[string]string{"": "plain text\n"})
	dir := a.addItem(t, "dir", map[string]string{"bin/hello*": "#!/bin/sh\necho hi\n", "share/doc/README": "read me", "hello-link": "->bin/hello"})
	ref := a.addItem(t, "ref.txt", map[string]string{"": "see " + plain + "\n"}, plain)

	exp := a.guix(t, nil, nil, "archive", "--export", "-r", ref, dir)
	if exp.status != 0 {
		t.Fatalf("export: %d %s", exp.status, exp.stderr)
	}
	items, err := storeio.ListBundle(bytes.NewReader([]byte(exp.stdout)))
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, it := range items {
		order = append(order, it.Path)
		if it.Signature == nil {
			t.Errorf("%s exported unsigned", it.Path)
		}
	}
	if len(order) != 3 || indexOf(order, plain) > indexOf(order, ref) || indexOf(order, dir) < 0 {
		t.Fatalf("export order %q: want the closure, references first", order)
	}
	if !strings.Contains(exp.stderr, "exporting path `"+ref+"'") {
		t.Errorf("export stderr %q", exp.stderr)
	}

	if r := b.guix(t, []byte(plain+" "+dir+"\n"+ref+"\n"), nil, "archive", "--missing"); r.stdout != plain+"\n"+dir+"\n"+ref+"\n" {
		t.Errorf("missing before import: %q", r.stdout)
	}
	imp := b.guix(t, []byte(exp.stdout), nil, "archive", "--import")
	if imp.status != 0 {
		t.Fatalf("import: %d %s", imp.status, imp.stderr)
	}
	if r := b.guix(t, []byte(plain+" "+dir+"\n"+ref+"\n"), nil, "archive", "--missing"); r.stdout != "" || r.status != 0 {
		t.Errorf("missing after import: %q %d", r.stdout, r.status)
	}
	for _, p := range []string{plain, dir, ref} {
		ra, _ := a.store.Real(p)
		rb, _ := b.store.Real(p)
		if ra == rb {
			t.Fatal("the two sides share a physical dir")
		}
		if !bytes.Equal(dump(t, ra), dump(t, rb)) {
			t.Errorf("%s differs after the round trip", p)
		}
		nix, err := exec.LookPath("nix-store")
		if err != nil && os.Getenv("CI") != "" {
			t.Fatal("nix-store (Debian nix-bin) is needed in CI to check the round trip independently")
		}
		if err == nil {
			na, _ := exec.Command(nix, "--dump", ra).Output()
			nb, _ := exec.Command(nix, "--dump", rb).Output()
			if len(na) == 0 || !bytes.Equal(na, nb) {
				t.Errorf("nix-store --dump of %s differs", p)
			}
		}
	}
	info, err := b.store.Info(ref)
	if err != nil || len(info.References) != 1 || info.References[0] != plain {
		t.Errorf("imported references %+v %v", info, err)
	}
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

func TestMissing(t *testing.T) {
	a := newSides(t, 1)[0]
	valid := a.addItem(t, "x", map[string]string{"": "x"})
	invalid := drv.StorePath(a.store.Logical, "nope", "nope")
	// Present on disk but not in the db: not valid.
	ghost := drv.StorePath(a.store.Logical, "ghost", "ghost")
	real, _ := a.store.Real(ghost)
	os.WriteFile(real, nil, 0o444)
	r := a.guix(t, []byte("  "+valid+"\n\t"+invalid+" "+ghost+"\n\n"), nil, "archive", "--missing")
	if r.status != 0 || r.stdout != invalid+"\n"+ghost+"\n" {
		t.Errorf("missing: %d %q %q", r.status, r.stdout, r.stderr)
	}
}

func TestExportInvalidPath(t *testing.T) {
	a := newSides(t, 1)[0]
	valid := a.addItem(t, "x", map[string]string{"": "x"})
	invalid := drv.StorePath(a.store.Logical, "nope", "nope")
	r := a.guix(t, nil, nil, "archive", "--export", valid, invalid)
	if r.status != 1 || r.stdout != "" || r.stderr != "guix archive: error: path `"+invalid+"' is not valid\n" {
		t.Errorf("export of an invalid path: %d %q %q", r.status, r.stdout, r.stderr)
	}
}

// Every refused bundle exits 1 and leaves the receiving store as it was.
func TestImportRefusals(t *testing.T) {
	sides := newSides(t, 2)
	a, b := sides[0], sides[1]
	b.authorize(t, a)
	canary := filepath.Join(t.TempDir(), "canary")
	os.WriteFile(canary, []byte("intact\n"), 0o644)
	item := a.addItem(t, "item", map[string]string{"f": "contents"})
	cases := []struct{ mode, want string }{
		{"unsigned", "lacks a valid signature"},
		{"unknown-key", "unauthorized public key"},
		{"wrong-sig", "Trojan horse"},
		{"forged-s", "invalid signature"},
		{"truncated", ""},
		{"dotdot", ""},
		{"abs-symlink", ""},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			exp := a.guix(t, nil, []string{"FAKEGUIX_HOSTILE=" + c.mode, "FAKEGUIX_HOSTILE_TARGET=" + canary}, "archive", "--export", item)
			if exp.status != 0 {
				t.Fatalf("hostile export: %s", exp.stderr)
			}
			before := storeEntries(t, b.store)
			imp := b.guix(t, []byte(exp.stdout), nil, "archive", "--import")
			t.Logf("%s: %s", c.mode, imp.stderr)
			if imp.status != 1 || !strings.HasPrefix(imp.stderr, "guix archive: error: ") || !strings.Contains(imp.stderr, c.want) {
				t.Errorf("import: %d %q, want exit 1 and %q", imp.status, imp.stderr, c.want)
			}
			if after := storeEntries(t, b.store); strings.Join(after, " ") != strings.Join(before, " ") {
				t.Errorf("store changed: %q -> %q", before, after)
			}
			if got, _ := os.ReadFile(canary); string(got) != "intact\n" {
				t.Fatalf("the hostile archive wrote through a symlink: canary now %q", got)
			}
		})
	}
	// The same item, signed by a key the receiver does not trust.
	b.authorize(t)
	exp := a.guix(t, nil, nil, "archive", "--export", item)
	imp := b.guix(t, []byte(exp.stdout), nil, "archive", "--import")
	if imp.status != 1 || !strings.Contains(imp.stderr, "unauthorized public key") || len(storeEntries(t, b.store)) != 0 {
		t.Errorf("untrusted key: %d %q %q", imp.status, imp.stderr, storeEntries(t, b.store))
	}
}

func TestHostileExtraPath(t *testing.T) {
	a := newSides(t, 1)[0]
	item := a.addItem(t, "item", map[string]string{"": "x"})
	modeFile := filepath.Join(t.TempDir(), "hostile")
	os.WriteFile(modeFile, []byte("extra-path\n"), 0o644)
	exp := a.guix(t, nil, []string{"FAKEGUIX_HOSTILE_FILE=" + modeFile}, "archive", "--export", item)
	items, err := storeio.ListBundle(strings.NewReader(exp.stdout))
	if err != nil || len(items) != 2 || items[0].Path != item || !strings.HasSuffix(items[1].Path, "-extra-item") {
		t.Fatalf("extra-path bundle: %+v %v", items, err)
	}
	acl, _ := storeio.ParseACL([]byte("(acl)"))
	acl.Add(a.key.Public())
	if err := storeio.VerifyBundle(strings.NewReader(exp.stdout), acl, new(bytes.Buffer)); err != nil {
		t.Errorf("the extra item is not properly signed: %v", err)
	}
}

// forged-s keeps the hash, the key and r, and changes only s.
func TestHostileForgedS(t *testing.T) {
	a := newSides(t, 1)[0]
	item := a.addItem(t, "item", map[string]string{"": "x"})
	good := a.guix(t, nil, nil, "archive", "--export", item)
	forged := a.guix(t, nil, []string{"FAKEGUIX_HOSTILE=forged-s"}, "archive", "--export", item)
	gi, err1 := storeio.ListBundle(strings.NewReader(good.stdout))
	fi, err2 := storeio.ListBundle(strings.NewReader(forged.stdout))
	if err1 != nil || err2 != nil || len(gi) != 1 || len(fi) != 1 || gi[0].Hash != fi[0].Hash {
		t.Fatalf("bundles: %v %v %+v %+v", err1, err2, gi, fi)
	}
	gs, _ := storeio.ParseSexp(gi[0].Signature)
	fs, err := storeio.ParseSexp(fi[0].Signature)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fs.Find("hash").Value(2), fi[0].Hash[:]) || !fs.Find("public-key").Equal(gs.Find("public-key")) ||
		bytes.Equal(fs.Find("s").Value(1), gs.Find("s").Value(1)) {
		t.Errorf("forged-s signature:\n%s\ngenuine:\n%s", fi[0].Signature, gi[0].Signature)
	}
	acl, _ := storeio.ParseACL([]byte("(acl)"))
	acl.Add(a.key.Public())
	if _, err := storeio.VerifySignature(fi[0].Signature, fi[0].Hash, acl); !errors.Is(err, storeio.ErrInvalidSignature) {
		t.Errorf("forged-s verifies as %v, want invalid signature", err)
	}
}

// omit-output leaves out the last requested item; the others are signed as usual.
func TestHostileOmitOutput(t *testing.T) {
	a := newSides(t, 1)[0]
	one := a.addItem(t, "one", map[string]string{"": "1"})
	two := a.addItem(t, "two", map[string]string{"": "2"})
	exp := a.guix(t, nil, []string{"FAKEGUIX_HOSTILE=omit-output"}, "archive", "--export", one, two)
	items, err := storeio.ListBundle(strings.NewReader(exp.stdout))
	if err != nil || exp.status != 0 || len(items) != 1 || (items[0].Path != one && items[0].Path != two) {
		t.Fatalf("omit-output bundle: %d %+v %v", exp.status, items, err)
	}
	acl, _ := storeio.ParseACL([]byte("(acl)"))
	acl.Add(a.key.Public())
	if err := storeio.VerifyBundle(strings.NewReader(exp.stdout), acl, new(bytes.Buffer)); err != nil {
		t.Errorf("the item left is not properly signed: %v", err)
	}
}

// The missing-* modes add words to the answer of --missing, after the genuine one, and
// leave --export alone.
func TestHostileMissing(t *testing.T) {
	a := newSides(t, 1)[0]
	valid := a.addItem(t, "valid", map[string]string{"": "v"})
	ghost := drv.StorePath(a.store.Logical, "ghost", "ghost")
	other := drv.StorePath(a.store.Logical, "other", "other")
	for _, c := range []struct{ mode, want string }{
		{"missing-unasked " + other, ghost + "\n" + other + "\n"},
		{"missing-option", ghost + "\n--foo\n-x\n"},
	} {
		r := a.guix(t, []byte(valid+" "+ghost+"\n"), []string{"FAKEGUIX_HOSTILE=" + c.mode}, "archive", "--missing")
		if r.status != 0 || r.stdout != c.want {
			t.Errorf("%s: %d %q %q, want %q", c.mode, r.status, r.stdout, r.stderr, c.want)
		}
		exp := a.guix(t, nil, []string{"FAKEGUIX_HOSTILE=" + c.mode}, "archive", "--export", valid)
		if items, err := storeio.ListBundle(strings.NewReader(exp.stdout)); exp.status != 0 || err != nil || len(items) != 1 {
			t.Errorf("%s: export %d %q %v", c.mode, exp.status, exp.stderr, err)
		}
	}
	if r := a.guix(t, []byte(valid+"\n"), []string{"FAKEGUIX_HOSTILE=missing-unasked"}, "archive", "--missing"); r.status != 1 {
		t.Errorf("missing-unasked without a path: %d %q", r.status, r.stdout)
	}
}

func TestKeysAndAuthorize(t *testing.T) {
	sides := newSides(t, 2)
	a, b := sides[0], sides[1]
	conf := filepath.Join(t.TempDir(), "conf")
	fresh := &side{store: a.store, conf: conf, log: a.log}
	if r := fresh.guix(t, nil, nil, "archive", "--generate-key"); r.status != 0 {
		t.Fatalf("generate-key: %q", r.stderr)
	}
	sec, err := storeio.LoadSecretKey(filepath.Join(conf, "signing-key.sec"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(filepath.Join(conf, "signing-key.pub"))
	if r := fresh.guix(t, nil, nil, "archive", "--generate-key"); r.status != 1 || !strings.Contains(r.stderr, "key pair exists") {
		t.Errorf("second generate-key: %d %q", r.status, r.stderr)
	}
	if r := b.guix(t, pub, nil, "archive", "--authorize"); r.status != 0 {
		t.Fatalf("authorize: %q", r.stderr)
	}
	acl, err := storeio.LoadACL(filepath.Join(b.conf, "acl"))
	if err != nil || !acl.Authorized(sec.Public()) || acl.Authorized(a.key.Public()) {
		t.Errorf("acl after authorize: %v", err)
	}
}

func TestPassthroughAndLog(t *testing.T) {
	a := newSides(t, 1)[0]
	r := a.guix(t, []byte("from stdin\n"), nil, "gc", "--list-busy")
	if r.status != passthroughStatus || r.stdout != "fakeguix passthrough: gc --list-busy\nfrom stdin\n" {
		t.Errorf("passthrough: %d %q", r.status, r.stdout)
	}
	if r := a.guix(t, nil, nil, "--version"); r.status != 0 || !strings.HasPrefix(r.stdout, "guix (GNU Guix) ") {
		t.Errorf("--version: %q", r.stdout)
	}
	log, _ := os.ReadFile(a.log)
	if string(log) != "guix gc --list-busy\nguix --version\n" {
		t.Errorf("FAKEGUIX_LOG: %q", log)
	}
}

// A process is gone when it does not exist or is a zombie.
// gone tells whether process pid has died (or is a zombie), waiting up to 10 s for it:
// a SIGKILL is delivered asynchronously, and on a loaded machine the process may still
// show as running for a moment after kill(2) returned.
func gone(pid int) bool {
	for range 500 {
		if dead(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func dead(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}
