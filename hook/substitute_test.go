package hook

import (
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
