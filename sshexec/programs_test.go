package sshexec

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func fakeProgram(t *testing.T, dir, name string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestLookupOrder: the explicit variable, then the build-time path, then PATH, then
// the usual places; the guix beside the daemon before PATH; never this program.
func TestLookupOrder(t *testing.T) {
	dir := t.TempDir()
	usual := filepath.Join(dir, "usual")
	old, oldBuiltin := UsualDirs, BuiltinSSH
	t.Cleanup(func() { UsualDirs, BuiltinSSH = old, oldBuiltin })
	UsualDirs = []string{usual}
	onPath := fakeProgram(t, filepath.Join(dir, "path"), "ssh")
	inUsual := fakeProgram(t, usual, "ssh")
	explicit := fakeProgram(t, filepath.Join(dir, "explicit"), "ssh")
	builtin := fakeProgram(t, filepath.Join(dir, "builtin"), "ssh")

	cases := []struct {
		env     map[string]string
		builtin string
		want    string
	}{
		{map[string]string{"OFFLOAD_SSH": explicit, "PATH": filepath.Dir(onPath)}, builtin, explicit},
		{map[string]string{"PATH": filepath.Dir(onPath)}, builtin, builtin},
		{map[string]string{"PATH": filepath.Dir(onPath)}, filepath.Join(dir, "gone", "ssh"), onPath},
		{map[string]string{"PATH": "/nonexistent:relative"}, "", inUsual},
	}
	for _, c := range cases {
		BuiltinSSH = c.builtin
		got, err := Lookup{Getenv: envOf(c.env)}.SSH()
		if err != nil || got != c.want {
			t.Errorf("env %v, builtin %q: %q, %v; want %q", c.env, c.builtin, got, err, c.want)
		}
	}

	// Guix: beside the daemon first; this program is skipped wherever it is.
	self := fakeProgram(t, filepath.Join(dir, "self"), "guix")
	besideDaemon := fakeProgram(t, filepath.Join(dir, "daemon"), "guix")
	pathGuix := fakeProgram(t, filepath.Join(dir, "path"), "guix")
	l := Lookup{Getenv: envOf(map[string]string{"PATH": filepath.Dir(self) + ":" + filepath.Dir(pathGuix)}), Self: self, DaemonDir: filepath.Dir(besideDaemon)}
	if got, err := l.Guix(); err != nil || got != besideDaemon {
		t.Errorf("guix: %q, %v; want the one beside the daemon %q", got, err, besideDaemon)
	}
	l.DaemonDir = ""
	if got, err := l.Guix(); err != nil || got != pathGuix {
		t.Errorf("guix without a daemon: %q, %v; want %q (not this program)", got, err, pathGuix)
	}
}

// TestLookupMissing: nothing anywhere gives one error naming every place tried and the
// variable to set; an explicit variable naming a missing file is an error of its own.
func TestLookupMissing(t *testing.T) {
	old, oldBuiltin := UsualDirs, BuiltinSSH
	t.Cleanup(func() { UsualDirs, BuiltinSSH = old, oldBuiltin })
	dir := t.TempDir()
	UsualDirs, BuiltinSSH = []string{filepath.Join(dir, "usual")}, filepath.Join(dir, "builtin", "ssh")
	_, err := Lookup{Getenv: envOf(map[string]string{"PATH": filepath.Join(dir, "bin")})}.SSH()
	var me *MissingProgramError
	if !errors.As(err, &me) {
		t.Fatalf("err = %v, want *MissingProgramError", err)
	}
	for _, want := range []string{"OFFLOAD_SSH", filepath.Join(dir, "builtin", "ssh"), filepath.Join(dir, "bin", "ssh"), filepath.Join(dir, "usual", "ssh")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %s", err, want)
		}
	}
	_, err = Lookup{Getenv: envOf(map[string]string{"OFFLOAD_SSH": filepath.Join(dir, "nope")})}.SSH()
	if err == nil || !strings.Contains(err.Error(), "OFFLOAD_SSH="+filepath.Join(dir, "nope")) {
		t.Errorf("a missing OFFLOAD_SSH: %v", err)
	}
}

// TestMissingProgramShort: the message lists the first few places looked at, not a
// whole PATH.
func TestMissingProgramShort(t *testing.T) {
	var tried []string
	for i := range 14 {
		tried = append(tried, fmt.Sprintf("/dir%d/guix", i))
	}
	err := &MissingProgramError{Program: "guix", Tried: tried, Env: "OFFLOAD_GUIX"}
	want := "cannot find the guix program on this host (tried /dir0/guix, /dir1/guix, /dir2/guix, /dir3/guix and 10 more); install it or set OFFLOAD_GUIX to its absolute file name"
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
}

// TestNoSSHFailsBeforeSpawning: a runner without ssh fails every remote command with
// the lookup's error, starting nothing.
func TestNoSSHFailsBeforeSpawning(t *testing.T) {
	missing := &MissingProgramError{Program: "ssh", Env: "OFFLOAD_SSH"}
	r := &Runner{StateDir: t.TempDir(), NoSSH: missing}
	err := r.RunRemote(t.Context(), Target{Name: "h", HostKey: "x"}, []string{"true"}, Stdio{})
	if !errors.Is(err, missing) {
		t.Errorf("err = %v, want the lookup's error", err)
	}
}

// TestDaemonFoundThroughAWrapper: guix-daemon may start the hook through a wrapper that
// stays its parent (a shell script setting the environment); the daemon's directory is
// still found, by walking up the process tree.
func TestDaemonFoundThroughAWrapper(t *testing.T) {
	dir := t.TempDir()
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	daemon := filepath.Join(dir, "guix-daemon")
	if err := os.WriteFile(daemon, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	// guix-daemon → wrapper sh (not exec'd) → the "hook" (sleep), whose pid it prints.
	cmd := exec.Command(daemon, "-c", `/bin/sh -c 'sleep 60 & echo $!; wait'; :`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Process.Kill(); cmd.Wait() })
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	if got := daemonAncestorDir(pid); got != dir {
		t.Fatalf("daemonAncestorDir(hook under a wrapper) = %q, want %q", got, dir)
	}
	if got := daemonDir(pid); got != "" {
		t.Fatalf("the hook itself taken for the daemon: %q", got)
	}
	if got := daemonAncestorDir(os.Getpid()); got != "" {
		t.Fatalf("a process without a guix-daemon ancestor: %q", got)
	}
}
