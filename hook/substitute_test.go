package hook

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"offload/machines"
)

// TestParseSubstitutes: OFFLOAD_SUBSTITUTES names machines by NAME (any port) or
// NAME:PORT, or all of them.
func TestParseSubstitutes(t *testing.T) {
	a := &machines.Machine{Name: "a.example", Port: 22}
	b := &machines.Machine{Name: "b.example", Port: 2222}
	for _, c := range []struct {
		env  string
		a, b bool
	}{
		{"", false, false},
		{"all", true, true},
		{"a.example", true, false},
		{" a.example , b.example:2222", true, true},
		{"b.example:22", false, false},
		{"b.example", false, true},
		{"x,all", true, true},
	} {
		s := ConfigFromEnv(func(k string) string {
			if k == SubstitutesEnv {
				return c.env
			}
			return ""
		}).Substitutes
		if s.For(a) != c.a || s.For(b) != c.b {
			t.Errorf("%s=%q: a %v b %v, want %v %v", SubstitutesEnv, c.env, s.For(a), s.For(b), c.a, c.b)
		}
	}
}

// TestDryRunListing: the script's sed reads the paths that show-what-to-build
// (guix/ui.scm) lists as would be downloaded, in both of its forms, and nothing else:
// not the derivations that would be built, nor the grafts.
func TestDryRunListing(t *testing.T) {
	sed, err := exec.LookPath("sed")
	if err != nil {
		t.Skip("no sed")
	}
	for _, c := range []struct {
		name, text string
		want       []string
	}{
		{"one file", "The following file would be downloaded:\n  /gnu/store/aaa-x\n", []string{"/gnu/store/aaa-x"}},
		{"sizes", "The following derivation would be built:\n  /gnu/store/ddd-y.drv\n" +
			"150.0 MB would be downloaded:\n  /gnu/store/aaa-x\n  /gnu/store/bbb-z\n" +
			"The following graft would be made:\n   /gnu/store/ggg-g.drv\n", []string{"/gnu/store/aaa-x", "/gnu/store/bbb-z"}},
		{"files", "The following files would be downloaded:\n  /gnu/store/aaa-x\n  /gnu/store/bbb-z\n", []string{"/gnu/store/aaa-x", "/gnu/store/bbb-z"}},
		{"nothing", "The following derivation would be built:\n  /gnu/store/ddd-y.drv\n", nil},
		{"empty", "", nil},
	} {
		cmd := exec.Command(sed, "-n", dryRunSed)
		cmd.Stdin = strings.NewReader(c.text)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: sed: %v", c.name, err)
		}
		if got := strings.Fields(string(out)); len(got)+len(c.want) > 0 && !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}
