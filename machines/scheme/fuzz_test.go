package scheme

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzEval checks that no input makes the interpreter panic or hang, and that every
// failure is an *Error placed inside the file.
func FuzzEval(f *testing.F) {
	// The machines files of package machines are the texts this interpreter is for.
	files, _ := filepath.Glob("../testdata/*.scm")
	if len(files) == 0 {
		f.Fatal("no seed files in ../testdata")
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
		v, err := New().EvalFile("f.scm", src)
		if err == nil {
			if v != nil {
				_ = v.String()
			}
			return
		}
		if v != nil {
			t.Fatalf("a value and an error from %q", src)
		}
		var se *Error
		if !errors.As(err, &se) {
			t.Fatalf("error %v (%T) is not an *Error", err, err)
		}
		lines := bytes.Count(src, []byte("\n")) + 1
		if se.Pos.File != "f.scm" || se.Pos.Line < 1 || se.Pos.Line > lines || se.Pos.Col < 1 {
			t.Fatalf("error %v outside the file of %d lines", err, lines)
		}
	})
}
