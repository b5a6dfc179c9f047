package integration

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"offload/integration/drv"
	"offload/integration/farm"
)

// TestOffloadSuccess: one derivation offloaded, built on the machine, brought back
// byte-identical, with the log on fd 4 and the trace line on stderr.
func TestOffloadSuccess(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := okDrv(f, "s1")
	r := offload(t, f, d, buildOpts{})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s, status %d; messages:\n%s\nlog:\n%s", r.answer, r.status, r.messages, r.log)
	}
	m := f.Machines[0]
	for _, out := range d.OutputPaths() {
		local, err := os.ReadFile(out)
		if err != nil {
			t.Fatalf("output not in the local store: %v", err)
		}
		remotePath, _ := m.Store.Drv().Real(out)
		remote, err := os.ReadFile(remotePath)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(local, remote) || !strings.Contains(string(local), "hello s1") {
			t.Errorf("local output %q differs from the machine's %q", local, remote)
		}
	}
	if !strings.Contains(r.log, "building t-ok nonce=s1") {
		t.Errorf("build log on fd 4 lacks the builder's output:\n%s", r.log)
	}
	if !strings.Contains(r.messages, "@ build-remote "+d.Path+" 127.0.0.1") {
		t.Errorf("no @ build-remote line:\n%s", r.messages)
	}
	// The daemon path: the machine's daemon did it all, without one guix process (a
	// Guile start each, on a real machine) on either side.
	if inv := m.Invocations(); len(inv) != 0 {
		t.Errorf("guix ran on the machine: %q", inv)
	}
	if inv := f.LocalInvocations(); len(inv) != 0 {
		t.Errorf("guix ran on this host: %q", inv)
	}
	if !strings.Contains(r.messages, "machine '"+machineName(m)+"': offloading through its guix-daemon's socket") {
		t.Errorf("no line says which path the machine gets:\n%s", r.messages)
	}
	t.Logf("messages:\n%s", r.messages)
}

// machineName is m as the hook names it: NAME:PORT.
func machineName(m *farm.Machine) string { return m.Name + ":" + itoa(m.Port) }

// TestMultipleOutputs: a derivation with outputs out and lib (out refers to lib).
func TestMultipleOutputs(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := f.MakeDrv(drv.Spec{
		Name:    "t-twoout",
		Args:    []string{"-c", `mkdir -p "$lib/lib" && echo libdata > "$lib/lib/x" && echo "uses $lib" > "$out"`},
		Outputs: []string{"out", "lib"},
		Nonce:   "two",
	})
	r := offload(t, f, d, buildOpts{})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("status %d:\n%s", r.status, r.messages)
	}
	if len(d.OutputPaths()) != 2 {
		t.Fatalf("want 2 outputs, got %q", d.OutputPaths())
	}
	for _, out := range d.OutputPaths() {
		if _, err := os.Lstat(out); err != nil {
			t.Errorf("output %s missing: %v", out, err)
		}
	}
}

// TestInputsAlreadyPresent: nothing is sent when the machine has every input.
func TestInputsAlreadyPresent(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := okDrv(f, "present")
	m := f.Machines[0]
	inputs, err := f.Local.Drv().BuildInputs(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CopyToMachine(m, append(inputs, d.Path)...); err != nil {
		t.Fatal(err)
	}
	r := offload(t, f, d, buildOpts{})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("status %d:\n%s", r.status, r.messages)
	}
	if n := countContaining(m.Invocations(), "archive --import"); n != 0 {
		t.Errorf("inputs were sent although present: %q", m.Invocations())
	}
	if n := countContaining(f.LocalInvocations(), "archive --export"); n != 0 {
		t.Errorf("inputs were exported locally although present: %q", f.LocalInvocations())
	}
}

// TestBuildFailure: exit 100 and nothing is retrieved.
func TestBuildFailure(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := f.MakeDrv(drv.Spec{Name: "t-fail", Args: []string{"-c", `echo "t-fail: about to fail"; echo "to stderr" >&2; exit 1`}, Nonce: "f"})
	before := storeEntries(t, f)
	r := offload(t, f, d, buildOpts{})
	if r.answer != "accept" || r.status != 100 {
		t.Fatalf("status %d, want 100:\n%s", r.status, r.messages)
	}
	if !strings.Contains(r.log, "about to fail") {
		t.Errorf("log lacks the builder's output:\n%s", r.log)
	}
	if contains(f.Machines[0].Invocations(), "archive --export") {
		t.Errorf("outputs were fetched after a failed build: %q", f.Machines[0].Invocations())
	}
	assertNotInStore(t, f, d.OutputPaths(), before)
}

// TestBuildTimeout: exit 101 when the machine's build times out.
func TestBuildTimeout(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := sleepDrv(f, "to", 30)
	r := offload(t, f, d, buildOpts{timeout: 2})
	if r.answer != "accept" || r.status != 101 {
		t.Fatalf("status %d, want 101:\n%s\n%s", r.status, r.messages, r.log)
	}
}

// TestMaxSilentTime: exit 101 when the build is silent too long.
func TestMaxSilentTime(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := sleepDrv(f, "silent", 30)
	r := offload(t, f, d, buildOpts{maxSilent: 2})
	if r.answer != "accept" || r.status != 101 {
		t.Fatalf("status %d, want 101:\n%s\n%s", r.status, r.messages, r.log)
	}
}

// TestHostileOutputs: what the machine returns is refused unless it is exactly the
// requested outputs, signed by a key in our ACL; nothing reaches the store. Each mode is
// refused by our own check, as its message says (the kernel would refuse ".." too, with
// another message).
func TestHostileOutputs(t *testing.T) {
	for _, c := range []struct{ mode, want string }{
		{"unsigned", "imported file lacks a signature"},
		{"unknown-key", "unauthorized public key"},
		{"extra-path", "-extra-item: store path not requested"},
		{"truncated", "truncated input"},
		{"dotdot", `invalid archive: nar entry "/": entry name ".."`},
		{"abs-symlink", `invalid archive: nar entry "/": duplicate entry "x"`},
		{"wrong-sig", "invalid hash"},
	} {
		t.Run(c.mode, func(t *testing.T) { assertHostileRefused(t, c.mode, c.want) })
	}
}

// assertHostileRefused offloads a build to a machine whose export is hostile in the
// given mode and checks that the hook refuses it with a message holding want, with a
// transient failure, nothing in the store and nothing written through a symlink.
func assertHostileRefused(t *testing.T, mode, want string) {
	t.Helper()
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	f.Machines[0].SetHostile(t, mode)
	d := okDrv(f, "h-"+mode)
	before := storeEntries(t, f)
	r := offload(t, f, d, buildOpts{shell: true})
	if r.answer != "accept" || r.status == 0 || r.status == 100 || r.status == 101 {
		t.Fatalf("status %d, want a transient failure:\n%s", r.status, r.messages)
	}
	assertNotInStore(t, f, d.OutputPaths(), before)
	if b, err := os.ReadFile(f.Canary()); err != nil || string(b) != farm.CanaryText {
		t.Errorf("the hostile archive wrote outside the store: canary %q, %v", b, err)
	}
	if line := lineWith(r.messages, "offload: machine '127.0.0.1:"+itoa(f.Machines[0].Port)+"': refusing what it returned: "); !strings.Contains(line, want) {
		t.Errorf("no refusal naming the machine and saying %q:\n%s", want, r.messages)
	}
}
