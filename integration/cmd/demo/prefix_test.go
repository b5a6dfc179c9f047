package main

import (
	"bytes"
	"testing"
)

// TestPrefixedPartialWrites: lines cut anywhere by the writes come out whole, each
// prefixed once (a status table printed in pipe-sized pieces stays a table).
func TestPrefixedPartialWrites(t *testing.T) {
	var out bytes.Buffer
	p := newPrefixed(&out, "> ")
	for _, w := range []string{"MACHINE  ST", "ATE\nfast     up\n", "slow", "     DOWN\n\nlast"} {
		p.Write([]byte(w))
	}
	p.Flush()
	want := "> MACHINE  STATE\n> fast     up\n> slow     DOWN\n> \n> last\n"
	if out.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}
