package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"offload/sshexec/sshtest"
)

func needGuile(t *testing.T) {
	t.Helper()
	sshtest.NeedTool(t, "guile") // Debian: guile-3.0
}

// `guix repl -- FILE ARGS` runs FILE with Guile: (command-line) is FILE ARGS, the
// stand-in's (guix offload) is loadable and its record has Guix's defaults, and the
// script's exit status is the command's.
func TestReplScript(t *testing.T) {
	needGuile(t)
	a := newSides(t, 1)[0]
	dir := t.TempDir()
	script := filepath.Join(dir, "s.scm")
	os.WriteFile(script, []byte(`(use-modules (guix offload))
(define m (build-machine (name "a") (user "u") (host-key "k") (systems '("x86_64-linux"))))
(write (list (command-line) (build-machine? m) (build-machine-port m) (build-machine-speed m)
             (build-machine-overload-threshold m) (build-machine-private-key m)
             (build-machine-compression m) (build-machine-parallel-builds m)))
(newline)
(exit (if (string=? (cadr (command-line)) "fail") 3 0))
`), 0o644)
	r := a.guix(t, nil, []string{"HOME=/home/h"}, "repl", "--", script, "x", "-y")
	want := `((` + `"` + script + `" "x" "-y") #t 22 1.0 0.8 "/home/h/.ssh/id_rsa" "zlib@openssh.com,zlib" 1)` + "\n"
	if r.status != 0 || r.stdout != want {
		t.Errorf("status %d, stdout %q, want %q; stderr %s", r.status, r.stdout, want, r.stderr)
	}
	if r := a.guix(t, nil, nil, "repl", "-L", dir, script, "fail"); r.status != 3 {
		t.Errorf("exit status of the script: %d (%s)", r.status, r.stderr)
	}
}

// The stand-in's build-machine refuses what Guix's refuses, with the place.
func TestReplRecordErrors(t *testing.T) {
	needGuile(t)
	a := newSides(t, 1)[0]
	dir := t.TempDir()
	for src, want := range map[string]string{
		`(build-machine (name "a") (user "u") (host-key "k") (systems '("s")) (cores 4))`: "unknown field",
		`(build-machine (name "a") (systems '("s")))`:                                     "missing field initializers (user host-key)",
		`(build-machine (name "a") (user "u") (host-key "k"))`:                            "lacks a value for its 'systems' field",
	} {
		script := filepath.Join(dir, "s.scm")
		os.WriteFile(script, []byte("(use-modules (guix offload))\n"+src+"\n"), 0o644)
		r := a.guix(t, nil, nil, "repl", "--", script)
		if r.status == 0 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, script+":2:") {
			t.Errorf("%s: status %d, stderr %s", src, r.status, r.stderr)
		}
	}
	// inherit copies the other record's fields
	script := filepath.Join(dir, "i.scm")
	os.WriteFile(script, []byte(`(use-modules (guix offload))
(define a (build-machine (name "a") (user "u") (host-key "k") (systems '("s")) (port 2)))
(write (build-machine-port (build-machine (inherit a) (name "b"))))`), 0o644)
	if r := a.guix(t, nil, nil, "repl", "--", script); r.status != 0 || r.stdout != "2" {
		t.Errorf("inherit: %d %q %s", r.status, r.stdout, r.stderr)
	}
}

func TestReplUsage(t *testing.T) {
	a := newSides(t, 1)[0]
	if r := a.guix(t, nil, nil, "repl", "--bogus"); r.status != 1 || r.stderr != "guix repl: error: bogus: unrecognized option\n" {
		t.Errorf("unknown option: %d %q", r.status, r.stderr)
	}
	if r := a.guix(t, nil, nil, "repl", "-t", "machine"); r.status != 1 || !strings.Contains(r.stderr, "not implemented") {
		t.Errorf("no script: %d %q", r.status, r.stderr)
	}
	if r := a.guix(t, nil, nil, "repl", "-t", "nope"); r.status != 1 || !strings.Contains(r.stderr, "nope: unknown type of REPL") {
		t.Errorf("bad type: %d %q", r.status, r.stderr)
	}
}
