package drv

import (
	"bytes"
	"crypto/sha256"
	"offload/workerproto"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const vectors = "../../testdata/vectors"

// Real .drv files written by guix-daemon parse and print back byte for byte.
func TestParsePrintVectors(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(vectors, "hook", "*", "derivation.drv"))
	if len(files) == 0 {
		t.Fatal("no derivation.drv in the vectors")
	}
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Parse("/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv", text)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if got := d.Bytes(); !bytes.Equal(got, text) {
			t.Errorf("%s: printed\n%s\nwant\n%s", f, got, text)
		}
		// Facts read from the file by eye, not from our output.
		if len(d.Outputs) != 1 || d.Outputs[0].Name != "out" || !strings.HasSuffix(d.Outputs[0].Path, "-t-ok") {
			t.Errorf("%s: outputs %+v", f, d.Outputs)
		}
		if d.System != "x86_64-linux" || len(d.Args) != 3 || d.Args[0] != "sh" {
			t.Errorf("%s: system %q args %q", f, d.System, d.Args)
		}
		if !strings.Contains(d.Args[2], `echo "building t-ok nonce=$NONCE"`) {
			t.Errorf("%s: escaped quotes not decoded: %q", f, d.Args[2])
		}
		if v, ok := d.Getenv("out"); !ok || v != d.Outputs[0].Path {
			t.Errorf("%s: env out = %q", f, v)
		}
	}
}

func TestEscapesRoundTrip(t *testing.T) {
	d := &Derivation{
		Outputs: []Output{{Name: "out", Path: "/gnu/store/x-a"}},
		System:  "x86_64-linux", Builder: "/bin/sh",
		Args: []string{"a\"b", `c\d`, "e\nf", "g\th", "i\rj", ""},
		Env:  []EnvVar{{Name: "k", Value: "v\\\"\n"}},
	}
	text := d.Bytes()
	if !bytes.Contains(text, []byte(`"a\"b","c\\d","e\nf","g\th","i\rj",""`)) {
		t.Errorf("escapes not written as the daemon does: %s", text)
	}
	got, err := Parse("", text)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Args, d.Args) || !reflect.DeepEqual(got.Env, d.Env) {
		t.Errorf("round trip: %q %q", got.Args, got.Env)
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, s := range []string{
		"", "Derive(", `Derive([],[],[],"s","b",[],[])`, // no outputs
		`Derive([("out","/p","","")],[],[],"s","b",[],[])x`,
		`Derive([("out","/p","","")],[],[],"s","b",[],[("a")])`,
		`Derive([("out","/p","","")],[],[],"s","b,[],[])`,
	} {
		if _, err := Parse("x.drv", []byte(s)); err == nil {
			t.Errorf("Parse(%q) succeeded", s)
		}
	}
}

// The nar hash that real Guix printed for the vectors' first item, in Nix
// base 32, checks our encoder (alphabet and bit order).
func TestNixBase32Vector(t *testing.T) {
	bundle, err := os.ReadFile(filepath.Join(vectors, "bundles", "a", "export.nar"))
	if err != nil {
		t.Fatal(err)
	}
	// export.listing.txt: item 1's nar is bytes 8..144.
	sum := sha256.Sum256(bundle[8:144])
	if got, want := NixBase32(sum[:]), "1vg5nrr95q9f83qa58f1vynnk5ad5ahyll1i1s63j0agw625v9nd"; got != want {
		t.Errorf("NixBase32 = %s, want %s (items-info.txt)", got, want)
	}
	if got := NixBase32(make([]byte, 20)); got != strings.Repeat("0", 32) {
		t.Errorf("20 zero bytes: %s", got)
	}
}

func newStore(t *testing.T) Store {
	dir := t.TempDir()
	s := Store{Logical: filepath.Join(dir, "store"), Physical: filepath.Join(dir, "store"), DB: filepath.Join(dir, "db")}
	if err := os.MkdirAll(s.Physical, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

func addFile(t *testing.T, s Store, name, content string, refs ...string) string {
	t.Helper()
	p := StorePath(s.Logical, name+content, name)
	real, _ := s.Real(p)
	if err := os.WriteFile(real, []byte(content), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := s.Register(Info{Path: p, References: refs}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMakeWritesValidDerivation(t *testing.T) {
	s := newStore(t)
	src := addFile(t, s, "src", "hello")
	spec := Spec{Name: "t-two", Builder: "/bin/sh", Args: []string{"-c", "echo hi"},
		Outputs: []string{"out", "lib"}, InputSrcs: []string{src}, Features: []string{"kvm", "big-mem"}, Nonce: "1"}
	d, err := s.Make(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckPath(d.Path); err != nil || !strings.HasSuffix(d.Path, "-t-two.drv") || !s.Valid(d.Path) {
		t.Fatalf("drv path %s: %v valid=%v", d.Path, err, s.Valid(d.Path))
	}
	back, err := s.Read(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, d) {
		t.Errorf("read back %+v\nwant %+v", back, d)
	}
	lib, _ := d.Output("lib")
	out, _ := d.Output("out")
	if !strings.HasSuffix(lib.Path, "-t-two-lib") || !strings.HasSuffix(out.Path, "-t-two") || s.CheckPath(lib.Path) != nil {
		t.Errorf("outputs %+v", d.Outputs)
	}
	if v, _ := d.Getenv("lib"); v != lib.Path {
		t.Errorf("env lib = %q", v)
	}
	if got := d.Features(); !reflect.DeepEqual(got, []string{"kvm", "big-mem"}) {
		t.Errorf("features %q", got)
	}
	info, err := s.Info(d.Path)
	if err != nil || !reflect.DeepEqual(info.References, []string{src}) {
		t.Errorf("db refs %+v %v", info, err)
	}
	spec.Nonce = "2"
	d2, err := s.Make(spec)
	if err != nil {
		t.Fatal(err)
	}
	if d2.Path == d.Path || d2.Outputs[0].Path == d.Outputs[0].Path {
		t.Error("a different nonce gave the same paths")
	}
	spec.InputSrcs = []string{StorePath(s.Logical, "nope", "nope")}
	if _, err := s.Make(spec); err == nil {
		t.Error("Make accepted an invalid input")
	}
}

func TestClosureTopoAndScan(t *testing.T) {
	s := newStore(t)
	a := addFile(t, s, "a", "a")
	b := addFile(t, s, "b", "refers to "+a, a)
	c := addFile(t, s, "c", "refers to "+b, b)
	got, err := s.Closure([]string{c})
	if err != nil || !reflect.DeepEqual(got, sortedCopy(a, b, c)) {
		t.Errorf("closure %q %v", got, err)
	}
	topo, err := s.TopoSort([]string{c, a, b})
	if err != nil || !reflect.DeepEqual(topo, []string{a, b, c}) {
		t.Errorf("topo %q %v", topo, err)
	}
	// Invalid item: present on disk but not registered.
	ghost := StorePath(s.Logical, "ghost", "ghost")
	real, _ := s.Real(ghost)
	os.WriteFile(real, nil, 0o444)
	if s.Valid(ghost) {
		t.Error("unregistered item is valid")
	}
	if _, err := s.Closure([]string{ghost}); err == nil {
		t.Error("closure of an invalid item succeeded")
	}

	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	// A hash split across the 64 KiB read boundary is still found.
	big := make([]byte, 64<<10-10)
	for i := range big {
		big[i] = 'x'
	}
	os.WriteFile(filepath.Join(dir, "sub", "f"), append(big, []byte(b)...), 0o644)
	os.Symlink(c, filepath.Join(dir, "link"))
	refs, err := ScanReferences(dir, []string{a, b, c})
	if err != nil || !reflect.DeepEqual(refs, sortedCopy(b, c)) {
		t.Errorf("scan %q %v", refs, err)
	}
}

func sortedCopy(ss ...string) []string { return slices.Sorted(slices.Values(ss)) }

func TestCheckPath(t *testing.T) {
	s := Store{Logical: "/gnu/store"}
	good := "/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv"
	if err := s.CheckPath(good); err != nil {
		t.Error(err)
	}
	for _, p := range []string{"/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1", "/gnu/store/e37x84zbqzs261xph9j4zdlbm7mmnix1-a",
		"/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-.a", "/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-a/b",
		"/tmp/x37x84zbqzs261xph9j4zdlbm7mmnix1-a", "/gnu/store/../x37x84zbqzs261xph9j4zdlbm7mmnix1-a"} {
		if s.CheckPath(p) == nil {
			t.Errorf("CheckPath(%q) accepted", p)
		}
	}
}

func TestAddItemAndBuildInputs(t *testing.T) {
	s := newStore(t)
	a, err := s.AddItem("a", map[string]string{"": "plain"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.AddItem("b", map[string]string{"bin/run*": "#!/bin/sh\nexec " + a + "\n", "link": "->bin/run"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(b)
	if err != nil || !reflect.DeepEqual(info.References, []string{a}) {
		t.Errorf("b refs %+v %v", info, err)
	}
	realB, _ := s.Real(b)
	if fi, err := os.Stat(filepath.Join(realB, "bin", "run")); err != nil || fi.Mode().Perm() != 0o555 {
		t.Errorf("executable: %v %v", fi, err)
	}
	if target, _ := os.Readlink(filepath.Join(realB, "link")); target != "bin/run" {
		t.Errorf("link -> %q", target)
	}
	dep, err := s.Make(Spec{Name: "dep", Builder: "/bin/sh", Outputs: []string{"out", "lib"}})
	if err != nil {
		t.Fatal(err)
	}
	depLib, _ := dep.Output("lib")
	// The needed output is present (built earlier) and refers to a.
	realLib, _ := s.Real(depLib.Path)
	os.WriteFile(realLib, []byte(a), 0o444)
	s.Register(Info{Path: depLib.Path, References: []string{a}, Deriver: dep.Path})
	d, err := s.Make(Spec{Name: "top", Builder: "/bin/sh", InputDrvs: map[string][]string{dep.Path: {"lib"}}, InputSrcs: []string{b}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.BuildInputs(d)
	want := sortedCopy(a, b, dep.Path, depLib.Path, d.Path)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("inputs %q %v\nwant %q", got, err, want)
	}
	if m := s.MissingOutputs(dep); !reflect.DeepEqual(m, []string{dep.Outputs[1].Path}) {
		t.Errorf("missing outputs of dep %q (outputs %+v)", m, dep.Outputs)
	}
	if ents, _ := filepath.Glob(filepath.Join(s.Physical, ".offload-tmp-*")); len(ents) != 0 {
		t.Errorf("temporaries left: %q", ents)
	}
}

// TestMakePathIsTheDaemons: a .drv made here lands at the path the daemon's
// AddTextToStore gives its text, with and without references (the hook adds .drv files
// that way and refuses one that lands elsewhere).
func TestMakePathIsTheDaemons(t *testing.T) {
	s := newStore(t)
	in, err := s.AddItem("src", map[string]string{"f": "x\n"})
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []Spec{
		{Name: "no-refs", Builder: "/bin/sh", Args: []string{"-c", "echo > $out"}},
		{Name: "with-ref", Builder: "/bin/sh", Args: []string{"-c", "cat $IN/f > $out"}, InputSrcs: []string{in}},
	} {
		d, err := s.Make(spec)
		if err != nil {
			t.Fatal(err)
		}
		var refs []string
		refs = append(refs, d.InputSrcs...)
		for _, i := range d.InputDrvs {
			refs = append(refs, i.Path)
		}
		if want := workerproto.TextPath(s.Logical, spec.Name+".drv", d.Bytes(), refs); d.Path != want {
			t.Errorf("%s: Make gave %s, the daemon gives %s", spec.Name, d.Path, want)
		}
	}
}
