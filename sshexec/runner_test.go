package sshexec

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunExitError(t *testing.T) {
	var r Runner
	var stderr bytes.Buffer
	err := r.Run(context.Background(), []string{"/bin/sh", "-c", "echo first >&2; echo last words >&2; exit 7"}, Stdio{Stderr: &stderr})
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v, want *ExitError", err)
	}
	if ee.Code != 7 || !strings.Contains(ee.StderrTail, "last words") || ee.Argv[0] != "/bin/sh" {
		t.Errorf("ExitError = %+v", ee)
	}
	if !strings.Contains(err.Error(), "status 7") || !strings.Contains(err.Error(), "last words") {
		t.Errorf("message %q lacks the status or stderr", err)
	}
	if stderr.String() != "first\nlast words\n" {
		t.Errorf("caller's stderr got %q", stderr.String())
	}
}

func TestRunStreams(t *testing.T) {
	var r Runner
	var out bytes.Buffer
	if err := r.Run(context.Background(), []string{"tr", "a-z", "A-Z"}, Stdio{Stdin: strings.NewReader("hello\n"), Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "HELLO\n" {
		t.Errorf("stdout %q", out.String())
	}
	// A nil Stdin is /dev/null: cat ends at once.
	if err := r.Run(context.Background(), []string{"cat"}, Stdio{}); err != nil {
		t.Fatal(err)
	}
}

func TestRunMissingProgram(t *testing.T) {
	var r Runner
	err := r.Run(context.Background(), []string{"/nonexistent/prog"}, Stdio{})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/prog") {
		t.Fatalf("err = %v", err)
	}
}

// TestRunCancelKillsGroup: a cancelled command's children die with it, even one that
// ignores SIGTERM, and Run returns only after everything is waited for.
func TestRunCancelKillsGroup(t *testing.T) {
	var r Runner
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// The child ignores SIGTERM, so only the group SIGKILL ends it.
		done <- r.Run(ctx, []string{"/bin/sh", "-c", `sh -c 'trap "" TERM; echo $$ > ` + pidFile + `.tmp; mv ` + pidFile + `.tmp ` + pidFile + `; sleep 300' & wait`}, Stdio{})
	}()
	var child int
	for i := 0; i < 500; i++ {
		if b, err := os.ReadFile(pidFile); err == nil {
			child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("child did not start")
	}
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	// Killed by SIGKILL; it was in our group, so nobody else reaps it but init; wait
	// for it to vanish or be a zombie.
	for i := 0; i < 500 && processAlive(child); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if processAlive(child) {
		t.Fatalf("child %d survived the cancelled command", child)
	}
}

func TestTraceIsPasteable(t *testing.T) {
	var trace bytes.Buffer
	r := Runner{Trace: &trace}
	args := append([]string{"printf", `%s\0`}, hardArgs...)
	var out bytes.Buffer
	if err := r.Run(context.Background(), args, Stdio{Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	line, ok := strings.CutPrefix(trace.String(), "+ ")
	if !ok || strings.Count(line, "\n") != strings.Count(QuoteCommand(args), "\n")+1 {
		t.Fatalf("trace %q is not one '+ ' line", trace.String())
	}
	pasted, err := exec.Command("/bin/sh", "-c", line).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pasted, out.Bytes()) {
		t.Errorf("pasted trace printed %q, the command printed %q", pasted, out.Bytes())
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || !bytes.HasPrefix(b[i+1:], []byte(" Z"))
}
