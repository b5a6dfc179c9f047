package machines

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The file Guix System writes: the append-map wrapper over records and lists of
// records (and '() from a service with nothing to add), on one line.
func TestGuixSystemFile(t *testing.T) {
	ms, ws, err := Load("testdata/guix-system.scm")
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 0 {
		t.Errorf("warnings: %v", ws)
	}
	a := defaults("eightysix.example.org", "bob", "x86_64-linux", "i686-linux")
	a.HostKey, a.PrivateKey, a.Speed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ1 root@(none)", "/root/.ssh/id_ed25519", 2
	b := defaults("armeight.example.org", "alice", "aarch64-linux")
	b.HostKey, b.PrivateKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ2", "/root/.ssh/id_ed25519"
	c := defaults("armnine.example.org", "alice", "aarch64-linux", "armhf-linux")
	c.HostKey, c.PrivateKey, c.Port, c.ParallelBuilds, c.Features = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ3", "/root/.ssh/id_ed25519", 2222, 4, []string{"kvm"}
	if len(ms) != 3 {
		t.Fatalf("got %d machines, want 3: %v", len(ms), ms)
	}
	for i, want := range []Machine{a, b, c} {
		same(t, ms[i], want)
	}
	if got := ms[1].Pos.String(); got != "testdata/guix-system.scm:1:327" {
		t.Errorf("position of the record inside a nested list: %s", got)
	}
}

// A service's entry reads the host key from a file with call-with-input-file and
// (@ (ice-9 textual-ports) get-string-all): the key is the file's text, newline
// included, as Guile reads it.
func TestHostKeyFromFile(t *testing.T) {
	ms, _, err := Load("testdata/guix-system-host-key.scm")
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile("testdata/vm_ssh_host_ed25519_key.pub")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[1].Name != "localhost" || ms[1].Port != 11022 || ms[1].HostKey != string(key) ||
		!reflect.DeepEqual(ms[1].Systems, []string{"x86_64-linux", "i686-linux"}) || ms[1].User != "offloading" {
		t.Fatalf("machines: %+v", ms)
	}
	if lw, errs := LintFiles(ms[1:]); len(errs) != 0 && strings.Contains(errs[0].Msg, "host-key") {
		t.Errorf("a host key read from a file with its newline does not lint: %v %v", lw, errs)
	}
}

func TestGuixSystemForms(t *testing.T) {
	m := func(name string) string {
		return `(build-machine (name "` + name + `") (user "u") (systems '("s")) (host-key "k"))`
	}
	keyFile := filepath.Join(t.TempDir(), "key.pub")
	if err := os.WriteFile(keyFile, []byte("ssh-ed25519 AAAAfile c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, src string
		names     []string
	}{
		{"append-map", `(append-map (lambda (e) (if (build-machine? e) (list e) e)) (list ` + m("a") + ` (list ` + m("b") + ` ` + m("c") + `) '()))`, []string{"a", "b", "c"}},
		{"append-map two lists", `(append-map (lambda (a b) (list a b)) (list ` + m("a") + `) (list ` + m("b") + ` ` + m("c") + `))`, []string{"a", "b"}},
		{"@ srfi-1", `((@ (srfi srfi-1) append-map) list (list ` + m("a") + `))`, []string{"a"}},
		{"@@ srfi-1", `((@@ (srfi srfi-1) append-map) list (list ` + m("a") + `))`, []string{"a"}},
		{"@ guile", `((@ (guile) list) ` + m("a") + `)`, []string{"a"}},
		{"@ of a redefined name is the module's", `(define (list . x) 'mine) ((@ (guile) cons) ` + m("a") + ` '())`, []string{"a"}},
		{"build-machine through @", `(list ((@ (guix offload) build-machine) (name "a") (user "u") (systems '("s")) (host-key "k")))`, []string{"a"}},
		{"build-machine through @ scripts", `(list ((@ (guix scripts offload) build-machine) (name "a") (user "u") (systems '("s")) (host-key "k")))`, []string{"a"}},
		{"build-machine? through @", `(filter (@ (guix offload) build-machine?) (list 1 ` + m("a") + ` "x"))`, []string{"a"}},
		{"if: only #f is false", `(append (if '() (list ` + m("a") + `) '()) (if 0 (list ` + m("b") + `) '()) (if "" (list ` + m("c") + `) '()) (if #f (list ` + m("d") + `) '()))`, []string{"a", "b", "c"}},
		{"if without alternative", `(begin (if #f 1) (list ` + m("a") + `))`, []string{"a"}},
		{"use-modules", `(use-modules (srfi srfi-1) (ice-9 textual-ports)) (append-map list (list ` + m("a") + `))`, []string{"a"}},
		{"call-with-input-file", `(list (build-machine (name (call-with-input-file "` + keyFile + `" get-string-all)) (user "u") (systems '("s")) (host-key "k")))`, []string{"ssh-ed25519 AAAAfile c\n"}},
		{"call-with-input-file and a lambda", `(list (build-machine (name (call-with-input-file "` + keyFile + `" (lambda (port) (get-string-all port) (get-string-all port)))) (user "u") (systems '("s")) (host-key "k")))`, []string{""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, _, err := Parse("f.scm", []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range ms {
				names = append(names, m.Name)
			}
			if !reflect.DeepEqual(names, tc.names) {
				t.Errorf("names = %q, want %q", names, tc.names)
			}
		})
	}
}

// Genuine mistakes in the new forms are FILE:LINE:COLUMN errors that guix is not
// asked about; forms that are valid Guile the evaluator lacks are Unsupported.
func TestGuixSystemFormErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.pub")
	tests := []struct {
		src, want, unsupported string
	}{
		{"(list\n (build-machine (name \"a\") (user \"u\") (systems '(\"s\"))\n  (host-key (call-with-input-file \"" + missing + "\" (@ (ice-9 textual-ports) get-string-all)))))",
			`f.scm:3:13: In procedure open-file: No such file or directory: "` + missing + `"`, ""},
		{`(list (@ (guix offload) build-machine))`, `f.scm:1:7: bad use of syntax 'build-machine'`, ""},
		{`(build-machine? 1 2)`, `f.scm:1:1: wrong number of arguments to build-machine?: got 2, want 1`, ""},
		// valid Guile that offload's evaluator does not implement
		{"(if (primitive-load \"/gnu/store/x-check.scm\")\n    '() '())", `f.scm:1:6: unbound variable: primitive-load`, "primitive-load"},
		// the record's modules hold the record's syntax and predicate, nothing else;
		// Guile's own module does not have them
		{`((@ (guix offload) build-machine-name) 1)`, `f.scm:1:2: offload's evaluator does not know (@ (guix offload) build-machine-name)`, "(@ (guix offload) build-machine-name)"},
		{`((@ (guile) build-machine?) 1)`, `f.scm:1:2: offload's evaluator does not know (@ (guile) build-machine?)`, "(@ (guile) build-machine?)"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			_, _, err := Parse("f.scm", []byte(tc.src))
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error\n got %s\nwant %s", got, tc.want)
			}
			if pe.Unsupported != tc.unsupported {
				t.Errorf("Unsupported = %q, want %q", pe.Unsupported, tc.unsupported)
			}
		})
	}
}
