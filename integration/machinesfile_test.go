package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"offload/integration/farm"
	"offload/machines"
	"offload/sshexec"
)

// The machines files that Guix System writes (../shared/spec/DEPLOYMENT.md, "The
// machines file that Guix System writes"), with the farm's machine in them, read by
// the real binary through the daemon-side driver.

// farmRecord is the build-machine record of the farm's machine m; hostKey is the
// host-key field's expression.
func farmRecord(m *farm.Machine, hostKey string) string {
	tg := m.Target()
	return fmt.Sprintf(`(build-machine
              (name %q)
              (port %d)
              (systems '("x86_64-linux" "i686-linux"))
              (user %q)
              (host-key %s)
              (private-key %q)
              (overload-threshold #f))`, m.Name, m.Port, tg.User, hostKey, tg.PrivateKey)
}

// guixSystemWrapper is Guix System's file around entries (records, or lists of them).
func guixSystemWrapper(entries ...string) string {
	return `((@ (srfi srfi-1) append-map)
 (lambda (entry)
   (if (build-machine? entry)
       (list entry)
       entry))
 (list ` + strings.Join(entries, "\n       ") + `))
`
}

// otherMachine is an entry for another system, which the request does not match.
const otherMachine = `(build-machine (name "armeight.example.org") (systems (list "aarch64-linux"))
                      (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x")
                      (user "alice") (private-key "/root/.ssh/id_ed25519"))`

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replRuns counts the `guix repl` runs of the local side so far.
func replRuns(f *farm.Farm) int { return countContaining(f.LocalInvocations(), "guix repl ") }

// offloadOnce offloads a fresh derivation through a fresh hook and checks that it
// was built on the farm's machine.
func offloadOnce(t *testing.T, f *farm.Farm, nonce string) {
	t.Helper()
	d := okDrv(f, nonce)
	r := offload(t, f, d, buildOpts{guixSystem: true}) // as Guix System runs the hook
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s, status %d; messages:\n%s", r.answer, r.status, r.messages)
	}
	if !strings.Contains(r.messages, "@ build-remote "+d.Path+" 127.0.0.1") {
		t.Errorf("not built on the farm's machine:\n%s", r.messages)
	}
	for _, out := range d.OutputPaths() {
		if b, err := os.ReadFile(out); err != nil || !strings.Contains(string(b), "hello "+nonce) {
			t.Errorf("output %s: %q, %v", out, b, err)
		}
	}
}

// howLine is the first line of `offload machines FILE`.
func howLine(t *testing.T, f *farm.Farm) string {
	t.Helper()
	out, errOut, _ := runOffload(t, f, "machines", f.MachinesFile())
	first, _, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(first, ";; ") {
		t.Fatalf("offload machines:\n%s%s", out, errOut)
	}
	return first
}

// Guix System's own file: the append-map wrapper, a record, a list of records, an
// empty list (a service with nothing to add). Offload's evaluator reads it: guix is
// not run.
func TestGuixSystemMachinesFile(t *testing.T) {
	f := farm.New(t, farm.Options{})
	hk := fmt.Sprintf("%q", f.Machines[0].Target().HostKey)
	writeFile(t, f.MachinesFile(), guixSystemWrapper(otherMachine, "(list "+farmRecord(f.Machines[0], hk)+")", "'()"))
	offloadOnce(t, f, "gs1")
	if n := replRuns(f); n != 0 {
		t.Errorf("guix repl ran %d times for a file the evaluator reads", n)
	}
	if got := howLine(t, f); got != ";; read by offload's own evaluator" {
		t.Errorf("offload machines says %q", got)
	}
}

// A service's entry whose host key is read from the machine's key file with
// call-with-input-file and (@ (ice-9 textual-ports) get-string-all).
func TestGuixSystemHostKeyFromFile(t *testing.T) {
	f := farm.New(t, farm.Options{})
	keyFile := filepath.Join(f.Dir, "ssh_host_ed25519_key.pub")
	writeFile(t, keyFile, f.Machines[0].Target().HostKey+"\n")
	hk := fmt.Sprintf("(call-with-input-file %q\n                          (@ (ice-9 textual-ports) get-string-all))", keyFile)
	writeFile(t, f.MachinesFile(), guixSystemWrapper(otherMachine, "(list "+farmRecord(f.Machines[0], hk)+")"))
	offloadOnce(t, f, "hk1")
	if n := replRuns(f); n != 0 {
		t.Errorf("guix repl ran %d times for a file the evaluator reads", n)
	}
}

// The virtual build machine's entry: listed only while the loaded file says the VM
// runs (here: while a flag file exists; on Guix System, Shepherd is asked). Guile
// evaluates the file through `guix repl` for every request, so one hook declines
// while the VM is down and accepts as soon as it runs: nothing was cached.
func TestGuixSystemVirtualBuildMachine(t *testing.T) {
	f := farm.New(t, farm.Options{})
	flag := filepath.Join(f.Dir, "vm-running")
	check := filepath.Join(f.Dir, "check-build-vm-availability.scm")
	writeFile(t, check, fmt.Sprintf(";; stands for the file that asks Shepherd whether the VM runs\n(file-exists? %q)\n", flag))
	keyFile := filepath.Join(f.Dir, "ssh_host_ed25519_key.pub")
	writeFile(t, keyFile, f.Machines[0].Target().HostKey+"\n")
	hk := fmt.Sprintf("(call-with-input-file %q\n                          (@ (ice-9 textual-ports) get-string-all))", keyFile)
	entry := fmt.Sprintf("(if (primitive-load %q)\n           (list %s)\n           '())", check, farmRecord(f.Machines[0], hk))
	writeFile(t, f.MachinesFile(), guixSystemWrapper(otherMachine, entry))

	h := startHook(t, f, buildOpts{guixSystem: true})
	d := okDrv(f, "vm1")
	ans, err := h.Request(false, d.System, d.Path, d.Features())
	if err != nil {
		t.Fatalf("request: %v (messages %q)", err, h.Messages())
	}
	if ans != "decline" {
		t.Fatalf("VM down: answer %s, want decline; messages:\n%s", ans, strings.Join(h.Messages(), "\n"))
	}
	if n := replRuns(f); n != 1 {
		t.Fatalf("guix repl ran %d times for the first request, want 1", n)
	}

	writeFile(t, flag, "") // the VM started
	ans, err = h.Request(false, d.System, d.Path, d.Features())
	if err != nil {
		t.Fatalf("request: %v (messages %q)", err, h.Messages())
	}
	if ans != "accept" {
		t.Fatalf("VM running: answer %s, want accept; messages:\n%s", ans, strings.Join(h.Messages(), "\n"))
	}
	if err := f.SendPaths(h, d); err != nil {
		t.Fatal(err)
	}
	status, _, err := h.Wait()
	msgs := strings.Join(h.Messages(), "\n")
	if err != nil || status != 0 {
		t.Fatalf("status %d, %v; messages:\n%s", status, err, msgs)
	}
	if !strings.Contains(msgs, "@ build-remote "+d.Path+" 127.0.0.1") || strings.Contains(msgs, "ignoring the machines file") {
		t.Errorf("messages:\n%s", msgs)
	}
	if n := replRuns(f); n != 2 {
		t.Errorf("guix repl ran %d times for two requests, want 2 (once per request)", n)
	}
	if got := howLine(t, f); got != ";; evaluated by "+filepath.Join(f.Bin.GuixDir, "guix")+" repl (the file uses primitive-load)" {
		t.Errorf("offload machines says %q", got)
	}

	// The VM stopped again: a new hook declines.
	os.Remove(flag)
	if r := offload(t, f, okDrv(f, "vm2"), buildOpts{guixSystem: true}); r.answer != "decline" {
		t.Errorf("VM stopped: answer %s:\n%s", r.answer, r.messages)
	}
}

// A mistake that Guile finds reaches the user as one line naming the file, and the
// hook declines (the daemon builds locally).
func TestGuixSystemMachinesFileError(t *testing.T) {
	f := farm.New(t, farm.Options{})
	entry := "(if (primitive-load \"/dev/null\")\n           (list (build-machine (name \"vm\") (systems '(\"x86_64-linux\"))))\n           '())"
	writeFile(t, f.MachinesFile(), guixSystemWrapper(entry))
	r := offload(t, f, okDrv(f, "err1"), buildOpts{})
	want := "offload: " + f.MachinesFile() + ":7:18: build-machine: missing field initializers (user host-key) in form (build-machine"
	if r.answer != "decline" || !strings.Contains(r.messages, want) || !strings.Contains(r.messages, "ignoring the machines file; building locally") {
		t.Errorf("answer %s, messages:\n%s\nwant a line starting %q", r.answer, r.messages, want)
	}
}

// BenchmarkMachinesFile measures the median time to read a machines file each way:
// offload's evaluator on Guix System's file (baseline: the manual's hand-written
// file), and guix repl on the virtual build machine's file, through the stand-in,
// which runs Debian's Guile (baseline: a bare `guile -c 0` started the same way).
func BenchmarkMachinesFile(b *testing.B) {
	f := farm.New(b, farm.Options{})
	dir := b.TempDir()
	n := pick(100, 20)
	hk := fmt.Sprintf("%q", f.Machines[0].Target().HostKey)
	gs := filepath.Join(dir, "guix-system.scm")
	writeFile(b, gs, guixSystemWrapper(otherMachine, "(list "+farmRecord(f.Machines[0], hk)+")", "'()"))
	manual := filepath.Join(dir, "manual.scm")
	writeFile(b, manual, "(list "+farmRecord(f.Machines[0], hk)+"\n "+otherMachine+")\n")
	check := filepath.Join(dir, "check.scm")
	writeFile(b, check, "(file-exists? \"/\")\n")
	vm := filepath.Join(dir, "vm.scm")
	writeFile(b, vm, guixSystemWrapper(otherMachine, fmt.Sprintf("(if (primitive-load %q) (list %s) '())", check, farmRecord(f.Machines[0], hk))))

	r := &sshexec.Runner{}
	guix := filepath.Join(f.Bin.GuixDir, "guix")
	opts := machines.LoadOptions{GuixProgram: guix, Guix: func(ctx context.Context, script, file string) ([]byte, error) {
		var out bytes.Buffer
		err := r.Run(ctx, []string{guix, "repl", "--", script, file}, sshexec.Stdio{Stdout: &out})
		return out.Bytes(), err
	}}
	measure := func(run func() error) []time.Duration {
		ds := make([]time.Duration, n)
		for i := range ds {
			start := time.Now()
			if err := run(); err != nil {
				b.Fatal(err)
			}
			ds[i] = time.Since(start)
		}
		return ds
	}
	load := func(path string, by machines.ReadBy, want int) func() error {
		return func() error {
			l, err := machines.LoadWith(context.Background(), path, opts)
			if err == nil && (l.How.By != by || len(l.Machines) != want) {
				err = fmt.Errorf("%s: read %v, %d machines", path, l.How, len(l.Machines))
			}
			return err
		}
	}
	for b.Loop() {
		fast := measure(load(gs, machines.ByEvaluator, 2))
		baseFast := measure(load(manual, machines.ByEvaluator, 2))
		slow := measure(load(vm, machines.ByGuix, 2))
		bare := measure(func() error {
			return r.Run(context.Background(), []string{"guile", "--no-auto-compile", "-q", "-c", "0"}, sshexec.Stdio{})
		})
		b.ReportMetric(ms(median(fast)), "evaluator-ms")
		b.ReportMetric(ms(median(baseFast)), "base-evaluator-ms")
		b.ReportMetric(ms(median(slow)), "guix-repl-ms")
		b.ReportMetric(ms(median(bare)), "base-guix-repl-ms")
	}
}
