package placement

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"offload/storeio"
)

func TestDrvName(t *testing.T) {
	for in, want := range map[string]string{
		"/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12.1.drv":         "hello",
		"/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-python-numpy-1.26.4.drv":  "python-numpy",
		"/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-t-ok.drv":                 "t-ok",
		"/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-gcc-toolchain-12.drv":     "gcc-toolchain",
		"/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-module-import.drv":        "module-import",
		"/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-linux-libre-6.1-guix.drv": "linux-libre",
	} {
		if got := DrvName(in); got != want {
			t.Errorf("DrvName(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestDrvInputs(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, d *storeio.Derivation) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, d.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dep := write("dep.drv", &storeio.Derivation{
		Outputs: []storeio.Output{{Name: "lib", Path: "/s/dep-lib"}, {Name: "out", Path: "/s/dep"}},
		System:  "x86_64-linux", Builder: "/bin/sh",
	})
	top := write("top.drv", &storeio.Derivation{
		Outputs:   []storeio.Output{{Name: "out", Path: "/s/top"}},
		InputDrvs: []storeio.InputDrv{{Path: dep, Outputs: []string{"out"}}},
		InputSrcs: []string{"/s/src-b", "/s/src-a"},
		System:    "x86_64-linux", Builder: "/bin/sh",
	})
	got, err := DrvInputs(top)
	want := []string{"/s/dep", "/s/src-a", "/s/src-b", top}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("inputs %q %v, want %q (the needed output only)", got, err, want)
	}
	if _, err := DrvInputs(filepath.Join(dir, "absent.drv")); err == nil {
		t.Error("no error for a missing .drv")
	}
	in := Sized([]string{top, "/s/absent"}, storeio.NarSize)
	if len(in) != 2 || in[0].Size <= 0 || in[1].Size != 0 {
		t.Errorf("sizes %+v: want the .drv's nar size, 0 for what is absent", in)
	}
	if b, n := Lacking(in, map[string]bool{top: true}); b != 0 || n != 1 {
		t.Errorf("lacking %d bytes, %d items", b, n)
	}
	if b, _ := Lacking(in, nil); b != Total(in) {
		t.Errorf("not asked: lacking %d, want all %d", b, Total(in))
	}
}
