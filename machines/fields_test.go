package machines

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSchemeReal(t *testing.T) {
	for f, want := range map[float64]string{1: "1.0", 0.8: "0.8", 2.5: "2.5", -1: "-1.0", 1e21: "1e+21"} {
		if got := schemeReal(f); got != want {
			t.Errorf("%v: %q, want %q", f, got, want)
		}
	}
}

// The JSON form has every field, in Guix's order, with null for no host-key and #f.
func TestMachineJSON(t *testing.T) {
	ms, _, err := Parse("m.scm", []byte(`(list (build-machine (name "a") (systems '("x")) (user "u") (private-key "/k") (overload-threshold #f)))`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ms[0])
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, f := range Fields {
		keys = append(keys, `"`+f.Name+`":`)
	}
	last := -1
	for _, k := range keys {
		i := strings.Index(string(b), k)
		if i <= last {
			t.Fatalf("%s missing or out of order in %s", k, b)
		}
		last = i
	}
	for _, want := range []string{`"host-key":null`, `"overload-threshold":null`, `"port":22`, `"features":[]`, `"speed":1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
}
