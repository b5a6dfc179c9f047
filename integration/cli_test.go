package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"offload/integration/farm"
)

// TestPassThrough: any sub-command that is not ours goes to the real guix with argv,
// stdin, stdout, environment and exit status untouched.
func TestPassThrough(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 0})
	// PATH holds, first, a `guix` that is this very binary (as when it is installed as
	// the daemon's GUIX), then the real one: the first must be skipped.
	selfDir := t.TempDir()
	if err := os.Symlink(f.Bin.Offload, filepath.Join(selfDir, "guix")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(f.Bin.Offload, "substitute", "--query", "x", "y")
	// OFFLOAD_VERBOSE=1, as the README suggests for the daemon's environment: still not
	// a byte more on stdout or stderr, which the daemon reads helpers' replies from.
	cmd.Env = []string{"PATH=" + selfDir + ":" + f.Bin.GuixDir, "MARKER=kept", "OFFLOAD_VERBOSE=1"}
	cmd.Stdin = strings.NewReader("have /gnu/store/x\n")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Fatalf("exit: %v, want the stand-in's 42; output %q", err, out.String())
	}
	got := out.String()
	if !strings.HasPrefix(got, "fakeguix passthrough: substitute --query x y\n") {
		t.Errorf("argv not passed on: %q", got)
	}
	if !strings.Contains(got, "have /gnu/store/x") {
		t.Errorf("stdin not passed on: %q", got)
	}

	// No real guix anywhere: a clear error naming what was tried.
	cmd = exec.Command(f.Bin.Offload, "gc", "--list-busy")
	cmd.Env = []string{"PATH=" + selfDir, "HOME=" + t.TempDir()}
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "cannot find the guix program") || !strings.Contains(string(b), "this program") {
		t.Fatalf("without guix: %v %q", err, b)
	}
	if strings.Count(strings.TrimSpace(string(b)), "\n") != 0 {
		t.Errorf("error is not one line: %q", b)
	}
}

// TestLegacyInvocation: daemons before 2019 ran the hook with the four arguments alone.
func TestLegacyInvocation(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	cmd := exec.Command(f.Bin.Offload, "aarch64-linux", "3600", "0", "0")
	cmd.Env = f.HookEnv()
	d := okDrv(f, "legacy")
	cmd.Stdin = strings.NewReader("1 aarch64-linux " + d.Path + " \n")
	b, err := cmd.CombinedOutput()
	if err != nil || string(b) != "# decline\n" {
		t.Fatalf("%v %q", err, b)
	}
}

// TestVerboseTracesCommands: with OFFLOAD_VERBOSE=1, every spawned command is printed
// as a shell-pasteable line.
func TestVerboseTracesCommands(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := okDrv(f, "verbose")
	r := offload(t, f, d, buildOpts{shell: true, env: []string{"OFFLOAD_VERBOSE=1"}})
	if r.status != 0 {
		t.Fatalf("status %d %q", r.status, r.messages)
	}
	var traced []string
	for _, l := range strings.Split(r.messages, "\n") {
		if strings.HasPrefix(l, "+ ") {
			traced = append(traced, l)
		}
	}
	if !contains(traced, "ssh ") || !contains(traced, "archive --export") || !contains(traced, "--missing") {
		t.Fatalf("spawned commands not traced: %q", traced)
	}
}
