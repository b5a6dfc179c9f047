package diagnose

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestDrvRequest(t *testing.T) {
	dir := t.TempDir()
	// A real derivation written by Guix (../testdata/vectors/hook/ok-final), and one with
	// required features and escapes.
	vec := "../testdata/vectors/hook/ok-final/derivation.drv"
	sys, feats, err := DrvRequest(vec)
	if err != nil || sys != "x86_64-linux" || len(feats) != 0 {
		t.Errorf("vector: %q %q %v", sys, feats, err)
	}
	drv := `Derive([("out","/gnu/store/6av8fya0mlf5y2bqrwcm0vzqwrs42nd9-t","","")],[],[],"aarch64-linux","/bin/sh",["-c","echo \"a\\b\""],[("out","/gnu/store/6av8fya0mlf5y2bqrwcm0vzqwrs42nd9-t"),("requiredSystemFeatures","kvm big-mem")])`
	p := filepath.Join(dir, "x.drv")
	os.WriteFile(p, []byte(drv), 0o644)
	sys, feats, err = DrvRequest(p)
	if err != nil || sys != "aarch64-linux" || !reflect.DeepEqual(feats, []string{"kvm", "big-mem"}) {
		t.Errorf("got %q %q %v", sys, feats, err)
	}
	for _, bad := range []string{"", "Derive(", `Derive([],[],[],"x")`, `Derive([("a"],[],[],"x","b",[],[])`, "garbage"} {
		os.WriteFile(p, []byte(bad), 0o644)
		if _, _, err := DrvRequest(p); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
