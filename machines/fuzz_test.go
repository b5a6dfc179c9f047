package machines

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic or hang, and that every
// failure is an *Error placed inside the file.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.scm")
	if len(files) == 0 {
		f.Fatal("no seed files in testdata")
	}
	for _, name := range files {
		src, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	for _, tc := range errorCases {
		f.Add([]byte(tc.src))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		ms, _, err := Parse("f.scm", src)
		if err == nil {
			for _, m := range ms {
				if m == nil || m.Name == "" && m.User == "" && len(m.Systems) == 0 && m.Port == 0 {
					t.Fatalf("empty machine from %q", src)
				}
			}
			return
		}
		if ms != nil {
			t.Fatalf("machines and an error from %q", src)
		}
		var pe *Error
		if !errors.As(err, &pe) {
			t.Fatalf("error %v (%T) is not an *Error", err, err)
		}
		lines := bytes.Count(src, []byte("\n")) + 1
		if pe.Pos.File != "f.scm" || pe.Pos.Line < 1 || pe.Pos.Line > lines || pe.Pos.Col < 1 {
			t.Fatalf("error %v outside the file of %d lines", err, lines)
		}
	})
}
