package machines

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"offload/sshexec/sshtest"
)

// guixOutput is what the script prints, for canned guix runs.
func guixOutput(items ...string) []byte {
	return []byte("guile: warning: some noise\n" + guixMarker + "(offload-machines 1 " + strings.Join(items, " ") + ")\n")
}

const vmMachine = `(machine ("testdata/guix-system-vm.scm" 18 18) (name "localhost") (port 11022) (systems ("x86_64-linux" "i686-linux")) (user "offloading") (private-key "/etc/guix/offload/ssh/id_ed25519") (host-key "ssh-ed25519 AAAAvm\n") (parallel-builds 1) (speed 1.0) (features ()) (overload-threshold 0.8) (compression "zlib@openssh.com,zlib") (compression-level 3) (daemon-socket "/var/guix/daemon-socket/socket"))`

func TestLoadWithFastPath(t *testing.T) {
	calls := 0
	opts := LoadOptions{GuixProgram: "/usr/bin/guix", Guix: func(context.Context, string, string) ([]byte, error) {
		calls++
		return nil, errors.New("not to be called")
	}}
	for _, f := range []string{"testdata/guix-system.scm", "testdata/guix-system-host-key.scm", "testdata/manual.scm"} {
		l, err := LoadWith(context.Background(), f, opts)
		if err != nil || len(l.Machines) < 2 || l.How.By != ByEvaluator {
			t.Errorf("%s: %d machines, %v, %v", f, len(l.Machines), l.How, err)
		}
		if got := l.How.String(); got != "read by offload's own evaluator" {
			t.Errorf("How = %q", got)
		}
	}
	if calls != 0 {
		t.Errorf("guix was run %d times for files the evaluator reads", calls)
	}
	// A genuine mistake is the evaluator's error; guix is not asked either.
	bad := filepath.Join(t.TempDir(), "bad.scm")
	os.WriteFile(bad, []byte("(list (build-machine (name \"a\") (user \"u\") (systems '(\"s\")) (port \"22\")))"), 0o644)
	if _, err := LoadWith(context.Background(), bad, opts); err == nil || !strings.Contains(err.Error(), bad+":1:67: wrong type for field 'port'") || calls != 0 {
		t.Errorf("error %v, %d guix runs", err, calls)
	}
}

func TestLoadWithoutGuix(t *testing.T) {
	_, err := LoadWith(context.Background(), "testdata/guix-system-vm.scm", LoadOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "testdata/guix-system-vm.scm:15:13: unbound variable: primitive-load (offload's evaluator cannot evaluate this") {
		t.Errorf("error %v", err)
	}
}

// The guix path: guix is run on every load (nothing cached), with a script and the
// file; its machines get the evaluator's checks.
func TestLoadWithGuix(t *testing.T) {
	var runs []string
	var scriptText []byte
	var scriptPath string
	out := guixOutput(`(output "")`, vmMachine)
	opts := LoadOptions{GuixProgram: "/gnu/store/x-guix/bin/guix", Guix: func(_ context.Context, script, file string) ([]byte, error) {
		runs = append(runs, file)
		scriptPath = script
		scriptText, _ = os.ReadFile(script)
		return out, nil
	}}
	l, err := LoadWith(context.Background(), "testdata/guix-system-vm.scm", opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.How.String(), "evaluated by /gnu/store/x-guix/bin/guix repl (the file uses primitive-load)"; got != want {
		t.Errorf("How = %q, want %q", got, want)
	}
	if len(l.Machines) != 1 {
		t.Fatalf("machines %v", l.Machines)
	}
	want := defaults("localhost", "offloading", "x86_64-linux", "i686-linux")
	want.Port, want.HostKey, want.PrivateKey = 11022, "ssh-ed25519 AAAAvm\n", "/etc/guix/offload/ssh/id_ed25519"
	same(t, l.Machines[0], want)
	if got := l.Machines[0].Pos.String(); got != "testdata/guix-system-vm.scm:18:18" {
		t.Errorf("pos %s", got)
	}
	if !bytes.Equal(scriptText, guixScript) {
		t.Errorf("the script given to guix is not guix-machines.scm")
	}
	if _, err := os.Stat(scriptPath); err == nil {
		t.Errorf("the script was left behind")
	}

	// The VM stopped: the next load asks guix again and sees no machine.
	out = guixOutput(`(output "")`)
	l, err = LoadWith(context.Background(), "testdata/guix-system-vm.scm", opts)
	if err != nil || len(l.Machines) != 0 {
		t.Errorf("second load: %v, %v", l.Machines, err)
	}
	if !reflect.DeepEqual(runs, []string{"testdata/guix-system-vm.scm", "testdata/guix-system-vm.scm"}) {
		t.Errorf("guix runs: %q", runs)
	}
}

func TestLoadWithGuixErrors(t *testing.T) {
	const file = "testdata/guix-system-vm.scm"
	tests := []struct {
		name string
		out  []byte
		err  error
		want string
	}{
		{"located error", guixOutput(`(error ("` + file + `" 3 5) "build-machine: unknown field in form (build-machine (nme \"x\"))")`), nil,
			file + `:3:5: build-machine: unknown field in form (build-machine (nme "x"))`},
		{"read error, Guile's column", guixOutput(`(error #f "` + file + `:30:1: unexpected end of input")`), nil,
			file + `:30:1: unexpected end of input`},
		{"Guix's leave, column from 0", guixOutput(`(output "x.scm:1:6: error: lacks systems\n")`, `(error #f "x.scm:1:6: error: lacks systems")`), nil,
			`x.scm:1:7: lacks systems`},
		{"unbound variable placed where the evaluator saw it", guixOutput(`(error #f "Unbound variable: primitive-load")`), nil,
			file + `:15:13: unbound variable: primitive-load`},
		{"unlocated error", guixOutput(`(error #f "In procedure +: Wrong type argument in position 2: \"a\"")`), nil,
			file + `:15:13: guix: In procedure +: Wrong type argument in position 2: "a"`}, // at the form that needed guix
		{"wrong type in a field", guixOutput(strings.Replace(vmMachine, `(port 11022)`, `(port "11022")`, 1)), nil,
			file + `:18:18: wrong type for field 'port': expected an integer, got a string "11022"`},
		{"object in a field", guixOutput(strings.Replace(vmMachine, `(user "offloading")`, `(user (%object "#<procedure car (_)>"))`, 1)), nil,
			file + `:18:18: wrong type for field 'user': expected a string, got an object #<procedure car (_)>`},
		{"guix failed", []byte("Backtrace:\n..."), errors.New("command guix repl -- s f exited with status 1: no code for module (guix offload)"),
			file + `:15:13: cannot have /g/guix repl evaluate the file (the file uses primitive-load): command guix repl -- s f exited with status 1: no code for module (guix offload)`},
		{"no result", []byte("hello\n"), nil,
			file + `:15:13: cannot have /g/guix repl evaluate the file (the file uses primitive-load): it printed no result`},
		{"unreadable result", []byte(guixMarker + "(offload-machines 1 (machine"), nil,
			file + `:15:13: cannot have /g/guix repl evaluate the file (the file uses primitive-load): unreadable result: guix repl output:1:29: missing close paren for list opened at 1:21`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadWith(context.Background(), file, LoadOptions{GuixProgram: "/g/guix",
				Guix: func(context.Context, string, string) ([]byte, error) { return tc.out, tc.err }})
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestLoadWithGuixWarnings(t *testing.T) {
	out := guixOutput(`(output "noise\n`+"testdata/guix-system-vm.scm"+`:12:8: warning: The 'system' field is deprecated, please use 'systems' instead.\n")`,
		strings.Replace(vmMachine, `(host-key "ssh-ed25519 AAAAvm\n")`, `(host-key "") (%used-system #t)`, 1))
	l, err := LoadWith(context.Background(), "testdata/guix-system-vm.scm", LoadOptions{
		Guix: func(context.Context, string, string) ([]byte, error) { return out, nil }})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"testdata/guix-system-vm.scm:12:9: warning: The 'system' field is deprecated, please use 'systems' instead.",
		"testdata/guix-system-vm.scm:18:18: warning: build-machine 'localhost' has no host-key field",
	}
	if got := warnStrings(l.Warnings); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
	if !l.Machines[0].UsedSystemField {
		t.Errorf("the deprecated system field is not noted")
	}
	if l.How.Guix != "guix" {
		t.Errorf("default program name %q", l.How.Guix)
	}
}

// guileModules is the stand-in's (guix offload), which Debian's Guile loads in place
// of Guix's.
const guileModules = "../integration/cmd/fakeguix/guile"

// guileFunc runs the script with Debian's Guile and the stand-in's modules, as the
// stand-in's `guix repl` does.
func guileFunc(t *testing.T) GuixFunc {
	guile := sshtest.NeedTool(t, "guile") // Debian: guile-3.0
	return func(ctx context.Context, script, file string) ([]byte, error) {
		var out, errOut bytes.Buffer
		cmd := exec.CommandContext(ctx, guile, "--no-auto-compile", "-q", "-L", guileModules, "-s", script, file)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if err != nil {
			err = errors.New(err.Error() + ": " + errOut.String())
		}
		return out.Bytes(), err
	}
}

// Guile itself, through the script, sees what the evaluator sees on the files both
// can read, and follows the loaded file's value on the others.
func TestGuileAgrees(t *testing.T) {
	guile := guileFunc(t)
	dir := t.TempDir()
	for _, f := range []string{"guix-system.scm", "guix-system-host-key.scm", "guix-system-vm.scm", "check-build-vm-availability.scm", "vm_ssh_host_ed25519_key.pub"} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte(`"testdata/`), []byte(`"`+dir+"/"))
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"guix-system.scm", "guix-system-host-key.scm"} {
		path := filepath.Join(dir, f)
		fast, _, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		src, _ := os.ReadFile(path)
		forced := &Error{Pos: Pos{File: path, Line: 1, Col: 1}, Unsupported: "test"}
		slow, _, err := loadByGuix(context.Background(), path, forced, How{By: ByGuix, Guix: "guile", Why: "test"}, guile)
		if err != nil {
			t.Fatalf("%s: %v\n%s", f, err, src)
		}
		if len(slow) != len(fast) {
			t.Fatalf("%s: guile sees %d machines, the evaluator %d", f, len(slow), len(fast))
		}
		for i := range fast {
			if *slow[i].OverloadThreshold != *fast[i].OverloadThreshold {
				t.Errorf("%s: machine %d: overload-threshold %v, evaluator %v", f, i, *slow[i].OverloadThreshold, *fast[i].OverloadThreshold)
			}
			slow[i].OverloadThreshold, fast[i].OverloadThreshold = nil, nil
			for _, m := range []*Machine{slow[i], fast[i]} {
				if len(m.Features) == 0 {
					m.Features = nil
				}
			}
			if !reflect.DeepEqual(*slow[i], *fast[i]) {
				t.Errorf("%s: machine %d\nguile     %+v\nevaluator %+v", f, i, *slow[i], *fast[i])
			}
		}
	}

	vm := filepath.Join(dir, "guix-system-vm.scm")
	for _, running := range []bool{false, true, false} {
		if running {
			os.WriteFile(filepath.Join(dir, "vm-running"), nil, 0o644)
		} else {
			os.Remove(filepath.Join(dir, "vm-running"))
		}
		l, err := LoadWith(context.Background(), vm, LoadOptions{Guix: guile, GuixProgram: "guile"})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range l.Machines {
			names = append(names, m.ID())
		}
		want := []string{"eightysix.example.org:22"}
		if running {
			want = append(want, "localhost:11022")
		}
		if !reflect.DeepEqual(names, want) || l.How.By != ByGuix {
			t.Errorf("VM running %v: machines %q, want %q (%v)", running, names, want, l.How)
		}
		if running && l.Machines[1].Pos != (Pos{File: vm, Line: 16, Col: 18}) {
			t.Errorf("position from Guile: %v", l.Machines[1].Pos)
		}
	}
}

// Mistakes that Guile finds reach the user as one line naming the file.
func TestGuileErrors(t *testing.T) {
	guile := guileFunc(t)
	dir := t.TempDir()
	tests := []struct{ src, want string }{
		{"(primitive-load \"/dev/null\")\n(list (build-machine (nme \"x\")))", ":2:22: build-machine: unknown field in form (build-machine (nme \"x\"))"},
		{"(primitive-load \"/dev/null\")\n(list (build-machine (name \"a\") (user \"u\") (host-key \"k\")))", ":2:7: The build-machine object lacks a value for its 'systems' field."},
		{"(primitive-load \"/dev/null\")\n(list (build-machine (name \"a\") (systems '(\"s\"))))", ":2:7: build-machine: missing field initializers (user host-key) in form (build-machine (name \"a\") (systems (quote (\"s\"))))"},
		// the evaluator finds foo unbound first; Guile agrees, without a place
		{"(list\n  (foo))", ":2:4: unbound variable: foo"},
		// Guile gives no place: the error is placed at the form that needed guix.
		{"(primitive-load \"/dev/null\")\n(list (oops))", ":1:2: guix: Unbound variable: oops"},
		{"(primitive-load \"/dev/null\")\n\"not a list\"", ":1:2: guix: the file did not return a list of build machines (Guix's hook ignores such a file)"},
		{"(primitive-load \"/dev/null\")\n(list (call-with-input-file \"/nonexistent/k.pub\" (@ (ice-9 textual-ports) get-string-all)))", `:1:2: guix: In procedure open-file: No such file or directory: "/nonexistent/k.pub"`},
		{"(primitive-load \"/nonexistent/check.scm\")", `:1:2: guix: In procedure open-file: No such file or directory: "/nonexistent/check.scm"`},
	}
	for i, tc := range tests {
		path := filepath.Join(dir, "m"+string(rune('a'+i))+".scm")
		if err := os.WriteFile(path, []byte(tc.src), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := LoadWith(context.Background(), path, LoadOptions{Guix: guile})
		if err == nil || err.Error() != path+tc.want {
			t.Errorf("%s:\n got %v\nwant %s", tc.src, err, path+tc.want)
		}
	}
}

// Guix's own reading, as a real Guix (2022) does it: the system-field warning goes to
// its warning port, which the script does not capture, so offload says it; a record
// with neither systems nor system is (systems (#f)) there, a machine that matches
// nothing, not an error.
func TestLoadWithGuixQuirks(t *testing.T) {
	out := guixOutput(strings.Replace(strings.Replace(vmMachine, `(host-key "ssh-ed25519 AAAAvm\n")`, `(host-key "ssh-ed25519 AAAAvm\n") (%used-system #t)`, 1),
		`(systems ("x86_64-linux" "i686-linux"))`, `(systems (#f))`, 1))
	l, err := LoadWith(context.Background(), "testdata/guix-system-vm.scm", LoadOptions{
		Guix: func(context.Context, string, string) ([]byte, error) { return out, nil }})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"testdata/guix-system-vm.scm:18:18: warning: build-machine has neither 'systems' nor 'system': it matches no build",
		"testdata/guix-system-vm.scm:18:18: warning: the 'system' field is deprecated, use 'systems' instead",
	}
	if got := warnStrings(l.Warnings); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
	if len(l.Machines) != 1 || len(l.Machines[0].Systems) != 0 {
		t.Fatalf("machines %+v", l.Machines)
	}
	if ok, _ := l.Machines[0].Matches("x86_64-linux", nil); ok {
		t.Errorf("a machine without systems matches")
	}
}
