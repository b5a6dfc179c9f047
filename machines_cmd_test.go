package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"offload/machines"
)

// What `offload machines` prints for a record is Scheme that reads back as the same
// machine.
func TestSchemeFieldsReadBack(t *testing.T) {
	src := `(list (build-machine (name "we\"ird\\name") (port 2222) (systems '("x86_64-linux" "i686-linux"))
  (user "bob") (private-key "/k") (host-key "ssh-ed25519 AAAA c") (parallel-builds 3) (speed 2.5)
  (features '("kvm" "big")) (overload-threshold #f) (compression "none") (compression-level 9)
  (daemon-socket "/run/s") (ssh-options '("-4" "-o" "X=y")))
 (build-machine (name "plain") (systems '("aarch64-linux")) (user "al") (private-key "/k2") (speed 2)))`
	ms, _, err := machines.Parse("m.scm", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	again.WriteString("(list")
	for _, m := range ms {
		again.WriteString(" (build-machine " + machines.SchemeFields(m) + ")")
	}
	again.WriteString(")")
	ms2, _, err := machines.Parse("again.scm", again.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, again.String())
	}
	for i := range ms {
		a, b := *ms[i], *ms2[i]
		a.Pos, b.Pos = machines.Pos{}, machines.Pos{}
		if machines.SchemeFields(&a) != machines.SchemeFields(&b) {
			t.Errorf("machine %d does not read back:\n%s\n%s", i, machines.SchemeFields(&a), machines.SchemeFields(&b))
		}
	}
	if got := machines.SchemeFields(ms[1]); !strings.Contains(got, "(speed 2.0)") || strings.Contains(got, "host-key") ||
		!strings.Contains(got, "(port 22)") || !strings.Contains(got, "(overload-threshold 0.8)") {
		t.Errorf("defaults: %s", got)
	}
}

// `offload machines` says first which way the file was read; with --json on stderr,
// so that stdout stays JSON.
func TestMachinesHowLine(t *testing.T) {
	guixRuns := 0
	opts := machines.LoadOptions{GuixProgram: "/gnu/store/g/bin/guix", Guix: func(context.Context, string, string) ([]byte, error) {
		guixRuns++
		return []byte(";; offload-machines\n(offload-machines 1 (output \"\"))\n"), nil
	}}
	var out, errOut bytes.Buffer
	if err := listMachines(context.Background(), "machines/testdata/guix-system.scm", false, opts, &out, &errOut); err == nil {
		t.Errorf("the fixture's host keys are not real keys: want lint errors")
	}
	if first, _, _ := strings.Cut(out.String(), "\n"); first != ";; read by offload's own evaluator" || guixRuns != 0 {
		t.Errorf("first line %q, %d guix runs", first, guixRuns)
	}
	out.Reset()
	errOut.Reset()
	if err := listMachines(context.Background(), "machines/testdata/guix-system-vm.scm", false, opts, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), ";; evaluated by /gnu/store/g/bin/guix repl (the file uses primitive-load)\n"; got != want || guixRuns != 1 {
		t.Errorf("output %q, want %q (%d guix runs)", got, want, guixRuns)
	}
	out.Reset()
	errOut.Reset()
	if err := listMachines(context.Background(), "machines/testdata/guix-system-vm.scm", true, opts, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if out.String() != "[]\n" || !strings.HasPrefix(errOut.String(), ";; evaluated by /gnu/store/g/bin/guix repl") {
		t.Errorf("--json: stdout %q, stderr %q", out.String(), errOut.String())
	}
}
