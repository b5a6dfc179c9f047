package workerproto

import (
	"os"
	"path/filepath"
	"testing"

	"offload/storeio"
)

// The .drv files in testdata/drv are real derivations (vectors/hook/ok-c1 and ok-final),
// named by the path the daemon gave them; their one input is busybox-static.
func TestTextPathMatchesDaemon(t *testing.T) {
	busybox := "/gnu/store/0vqwx856bga9sixsmbj1x4w72br9l969-busybox-static"
	files, err := filepath.Glob("testdata/drv/*.drv")
	if err != nil || len(files) < 2 {
		t.Fatalf("test derivations: %v %v", files, err)
	}
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d, err := storeio.ParseDerivation("/gnu/store/"+filepath.Base(f), text)
		if err != nil {
			t.Fatal(err)
		}
		refs := d.InputSrcs // a .drv refers to its sources and input .drvs (none here)
		if len(refs) != 1 || refs[0] != busybox || len(d.InputDrvs) != 0 {
			t.Fatalf("%s: unexpected inputs %v %v", f, d.InputSrcs, d.InputDrvs)
		}
		want := "/gnu/store/" + filepath.Base(f)
		if got := TextPath("/gnu/store", "t-ok.drv", text, refs); got != want {
			t.Errorf("TextPath = %s, want %s", got, want)
		}
	}
	plain := "/gnu/store/24qd8hd2sn67df4gwbpdc33axwnm3r61-vec-plain.txt"
	ref := "/gnu/store/hr0w17rzhvdq4jwa0sb4grs6h9na174y-vec-ref.txt"
	if got := TextPath("/gnu/store", "vec-plain.txt", []byte("Hello, test vectors!\n"), nil); got != plain {
		t.Errorf("TextPath without references = %s, want %s", got, plain)
	}
	content := []byte("This item refers to " + plain + "\n")
	if got := TextPath("/gnu/store", "vec-ref.txt", content, []string{plain}); got != ref {
		t.Errorf("TextPath with a reference = %s, want %s", got, ref)
	}
}

// The daemon reads the references into a set: their order does not change the path.
func TestTextPathSortsReferences(t *testing.T) {
	a, b := "/gnu/store/a", "/gnu/store/b"
	refs := []string{b, a}
	if TextPath("/gnu/store", "x", nil, refs) != TextPath("/gnu/store", "x", nil, []string{a, b}) {
		t.Error("reference order changes the path")
	}
	if refs[0] != b {
		t.Error("TextPath sorted the caller's slice")
	}
}
