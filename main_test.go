package main

import (
	"reflect"
	"testing"
)

func TestNormalizeArgs(t *testing.T) {
	cases := []struct{ in, want []string }{
		// guix-daemon since 2019: GUIX offload SYSTEM MAX-SILENT PRINT-TRACE TIMEOUT
		{[]string{"offload", "x86_64-linux", "3600", "0", "0"}, []string{"offload", "x86_64-linux", "3600", "0", "0"}},
		// NIX_BUILD_HOOK before 2019: the four arguments alone
		{[]string{"x86_64-linux", "3600", "1", "0"}, []string{"offload", "x86_64-linux", "3600", "1", "0"}},
		// a guix sub-command is left alone, to be handed to guix
		{[]string{"substitute", "--query", "x", "y"}, []string{"substitute", "--query", "x", "y"}},
		{[]string{"gc", "--list-busy"}, []string{"gc", "--list-busy"}},
	}
	for _, c := range cases {
		if got := normalizeArgs(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("normalizeArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
