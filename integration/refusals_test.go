package integration

// Issue 16: one end-to-end test for each refusal of the hook that no other test
// guarded. Each fails when its check is removed from the product code.

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"offload/integration/drv"
	"offload/integration/farm"
	"offload/machines"
)

// TestRefusesUnaskedMissingAnswer: the machine's answer to `guix archive --missing`
// may only hold paths we asked about. A hostile machine that names another local store
// item, or option-like words, is refused before anything is exported: the local
// `guix archive --export` never runs, so that item is not sent and the words never
// reach its command line.
func TestRefusesUnaskedMissingAnswer(t *testing.T) {
	for _, c := range []struct {
		name  string
		mode  func(secret string) string
		words []string // what the answer adds; nil: the secret item
	}{
		{"unasked-path", func(secret string) string { return "missing-unasked " + secret }, nil},
		{"option-like", func(string) string { return "missing-option" }, []string{"--foo", "-x"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := farm.New(t, farm.Options{})
			writeMachines(f, nil)
			m := f.Machines[0]
			// A valid local item that the build does not need.
			secret := f.AddLocalItem("secret-"+c.name, map[string]string{"key": "not for the machine\n"})
			words := c.words
			if words == nil {
				words = []string{secret}
			}
			m.SetHostile(t, c.mode(secret))
			d := okDrv(f, "missing-"+c.name)
			r := offload(t, f, d, buildOpts{shell: true, env: []string{"OFFLOAD_ATTEMPTS=1"}})
			if r.answer != "accept" || r.status != 1 {
				t.Errorf("answer %s status %d, want accept and the transient 1:\n%s", r.answer, r.status, r.messages)
			}
			// The failure line names the machine once, then says what it did.
			want := "the last, machine '" + m.Name + ":" + itoa(m.Port) + "': it answered `guix archive --missing` with a path we did not ask about: " + strconv.Quote(words[0])
			if !strings.Contains(r.messages, want) {
				t.Errorf("no refusal %q:\n%s", want, r.messages)
			}
			local := f.LocalInvocations()
			if n := countContaining(local, "archive --export"); n != 0 {
				t.Errorf("the local export ran %d times after the hostile answer: %q", n, local)
			}
			never := words
			if c.words != nil {
				never = append(never, secret)
			}
			for _, w := range never {
				if hasWord(local, w) {
					t.Errorf("a local guix command line holds %q: %q", w, local)
				}
			}
			if m.Store.Drv().Valid(secret) {
				t.Errorf("the machine received %s", secret)
			}
			if contains(m.Invocations(), "archive --import") {
				t.Errorf("the machine imported something: %q", m.Invocations())
			}
		})
	}
}

// hasWord tells whether one of the command lines has w as one of its words.
func hasWord(lines []string, w string) bool {
	for _, l := range lines {
		for _, f := range strings.Fields(l) {
			if f == w {
				return true
			}
		}
	}
	return false
}

// TestRefusesMissingOutput: a machine whose export leaves out one of the requested
// outputs (of a two-output derivation) fails the hook with a transient status, naming
// the output, rather than exit 0 with an output missing.
func TestRefusesMissingOutput(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	m.SetHostile(t, "omit-output")
	d := f.MakeDrv(drv.Spec{
		Name:    "t-twoout",
		Args:    []string{"-c", `mkdir -p "$lib/lib" && echo libdata > "$lib/lib/x" && echo "uses $lib" > "$out"`},
		Outputs: []string{"out", "lib"},
		Nonce:   "omit",
	})
	if len(d.OutputPaths()) != 2 {
		t.Fatalf("want 2 outputs, got %q", d.OutputPaths())
	}
	r := offload(t, f, d, buildOpts{shell: true})
	if r.answer != "accept" || r.status == 0 || r.status == 100 || r.status == 101 {
		t.Fatalf("answer %s status %d, want accept and a transient failure:\n%s", r.answer, r.status, r.messages)
	}
	if !contains(m.Invocations(), " build ") {
		t.Fatalf("the build did not run on the machine: %q", m.Invocations())
	}
	var omitted []string
	for _, out := range d.OutputPaths() {
		if strings.Contains(r.messages, "machine '"+m.Name+":"+itoa(m.Port)+"': it did not return output "+out) {
			omitted = append(omitted, out)
		}
	}
	if len(omitted) != 1 {
		t.Fatalf("want the message naming the one output left out, got:\n%s", r.messages)
	}
	if _, err := os.Lstat(omitted[0]); err == nil {
		t.Errorf("the output reported missing is in the local store: %s", omitted[0])
	}
}

// TestReplacesJunkAtOutputPath: whatever an earlier, crashed attempt left at an output
// path (present but not registered, so the daemon asks for it) is replaced by the
// build's output, not kept for the daemon to register.
func TestReplacesJunkAtOutputPath(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := okDrv(f, "junk")
	out := d.OutputPaths()[0]
	// A partial restore: a read-only directory where a regular file belongs.
	if err := os.MkdirAll(filepath.Join(out, "partial"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "partial", "junk"), []byte("junk from a crash\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(out, 0o555); err != nil {
		t.Fatal(err)
	}
	if got := f.Local.Drv().MissingOutputs(d); len(got) != 1 || got[0] != out {
		t.Fatalf("the junk made the output valid: missing outputs %q", got)
	}
	before := storeEntries(t, f)
	r := offload(t, f, d, buildOpts{})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s status %d:\n%s", r.answer, r.status, r.messages)
	}
	if fi, err := os.Lstat(out); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("output %s is not the build's regular file: %v", out, describe(fi, err))
	}
	got, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(got), "hello junk") {
		t.Errorf("output holds %q (%v), want the build's", got, err)
	}
	// The junk was removed, not left next to it.
	if after := storeEntries(t, f); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("local store entries: before %q, after %q", before, after)
	}
}

func describe(fi os.FileInfo, err error) string {
	if err != nil {
		return err.Error()
	}
	return fi.Mode().String()
}

// TestForgedSignatureRefused: a signature over the right hash, by an authorized key,
// whose s is forged (s+1 mod n) is refused by the signature arithmetic itself ("wrong-sig"
// in TestHostileOutputs is caught earlier, by the hash comparison).
func TestForgedSignatureRefused(t *testing.T) {
	assertHostileRefused(t, "forged-s", "invalid signature")
}

// TestFailureBeforeBuildBacksOff: a machine that fails before the build started on it
// (here it refuses our inputs: it does not trust our key) is recorded as down, and the
// next request, made at once (well within the 5 s of the first backoff), does not try
// it again.
func TestFailureBeforeBuildBacksOff(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	id := m.Name + ":" + itoa(m.Port)
	if err := os.WriteFile(filepath.Join(m.Store.Conf, "acl"), []byte("(acl)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := okDrv(f, "backoff")
	// One attempt: the failure ends the build, and the backoff is what is checked.
	r := offload(t, f, d, buildOpts{env: []string{"OFFLOAD_ATTEMPTS=1"}})
	if r.answer != "accept" || r.status != 1 {
		t.Fatalf("answer %s status %d, want accept and the transient 1:\n%s", r.answer, r.status, r.messages)
	}
	if !strings.Contains(r.messages, "the last, machine '"+id+"': sending") {
		t.Fatalf("the machine did not fail before the build:\n%s", r.messages)
	}
	// The state file says it is down because of this failure (not of a probe).
	st := machines.State{Dir: filepath.Join(f.State, "offload")}
	h, err := st.Health(m.StateKey())
	if err != nil {
		t.Fatal(err)
	}
	if h.Failures != 1 || !strings.Contains(h.LastError, "sending") || h.RetryAfter.Sub(h.DownSince) < machines.BackoffBase {
		t.Errorf("state of %s: %+v, want one failure, its error, a backoff of %s", id, h, machines.BackoffBase)
	}
	// The next request skips it: declined for a local build, no command run there.
	runs := len(m.Invocations())
	next := okDrv(f, "backoff-next")
	r = offload(t, f, next, buildOpts{wantsLocal: true})
	if r.answer != "decline" {
		t.Errorf("next request: answer %s, want decline (the only machine is in backoff):\n%s", r.answer, r.messages)
	}
	if !strings.Contains(r.messages, "machine '"+id+"' (since ") || !strings.Contains(r.messages, "is down") {
		t.Errorf("next request: no message saying the machine is down:\n%s", r.messages)
	}
	assertNamedOnce(t, strings.Split(r.messages, "\n"), m)
	if n := len(m.Invocations()); n != runs {
		t.Errorf("the next request ran guix on the machine again: %q", m.Invocations()[runs:])
	}
}
