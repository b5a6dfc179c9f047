package sshexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults for the zero values of Runner's fields.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultControlPersist = 60 * time.Second
)

const (
	// killGrace is how long a cancelled command's process group has between SIGTERM
	// and SIGKILL.
	killGrace = 3 * time.Second
	// waitDelay bounds how long Wait waits, after the process exited or was killed,
	// for its output pipes to close (a grandchild may hold them) and for the stdin
	// copier to stop.
	waitDelay = 10 * time.Second
	// stderrGrace is how long a cancelled command's stderr is read after it died.
	stderrGrace = 200 * time.Millisecond
	// tailSize is how much of a command's stderr is kept for error messages.
	tailSize = 4096
)

// Stdio is what a command's standard streams are wired to. A nil Stdin reads from
// /dev/null; a nil Stdout or Stderr discards. Readers and writers that are *os.File are
// handed to the process as they are; others are copied through a pipe as the data flows,
// never collected whole.
type Stdio struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Runner starts local commands and remote commands over ssh. The zero value runs local
// commands; remote commands need StateDir (for pinned host keys and control sockets).
// A Runner is safe for concurrent use.
type Runner struct {
	// StateDir is $GUIX_STATE_DIRECTORY/offload. The pinned known-hosts files
	// (known_hosts.d/) and the ssh control sockets (ssh/) live under it in
	// directories only the owner can enter.
	StateDir string
	// SSH is the ssh program; "" means "ssh" from PATH (Lookup.SSH finds it without).
	SSH string
	// NoSSH, when not nil, says that this host has no ssh (a *MissingProgramError from
	// Lookup.SSH): every remote command fails with it before anything is started.
	NoSSH error
	// ConnectTimeout is passed as -o ConnectTimeout; 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ControlPersist is how long an idle shared connection stays open; 0 means
	// DefaultControlPersist; negative disables connection sharing.
	ControlPersist time.Duration
	// Trace, when not nil, gets each command before it starts, as one line of shell
	// that can be pasted to run it again, prefixed with "+ ".
	Trace io.Writer
	// UseKnownHosts is the explicit opt-in that lets machines without a host-key be
	// checked against the user's own known_hosts files (still strictly).
	UseKnownHosts bool
}

// ExitError is a local command that ran and failed.
type ExitError struct {
	Argv       []string
	Code       int // exit status; -1 when killed by a signal
	StderrTail string
}

func (e *ExitError) Error() string {
	what := fmt.Sprintf("exited with status %d", e.Code)
	if e.Code < 0 {
		what = "was killed by a signal"
	}
	msg := fmt.Sprintf("command %s %s", shorten(QuoteCommand(e.Argv)), what)
	if t := LastLines(e.StderrTail, 3); t != "" {
		msg += ": " + t
	}
	return msg
}

// Run runs the local command argv with the given streams and waits for it.
// A command that exits non-zero gives an *ExitError; a cancelled ctx gives an error
// wrapping ctx.Err(), after the command's whole process group has been killed.
func (r *Runner) Run(ctx context.Context, argv []string, stdio Stdio) error {
	return r.run(ctx, argv, stdio)
}

// run starts argv in its own process group and waits for it (see Run).
func (r *Runner) run(ctx context.Context, argv []string, stdio Stdio) error {
	if len(argv) == 0 || argv[0] == "" {
		return errors.New("run: empty command")
	}
	if r.Trace != nil {
		// One Write per line, so that concurrent commands do not interleave lines.
		io.WriteString(r.Trace, "+ "+QuoteCommand(argv)+"\n")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = stdio.Stdin
	cmd.Stdout = stdio.Stdout
	tail := NewTail(tailSize)
	var stderr io.Writer = tail
	if stdio.Stderr != nil {
		stderr = io.MultiWriter(stdio.Stderr, tail)
	}
	// Our own pipe for stderr rather than exec's, so that Wait does not wait for every
	// holder of its write end: an ssh master holds a client's stderr (passed over the
	// control socket) until the remote command ends, even after the client was killed.
	errR, errW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	cmd.Stderr = errW
	// Its own process group, so that cancelling kills whatever it started too
	// (ssh's ProxyCommand, a shell's children), not just the process itself.
	// Pdeathsig: guix-daemon kills an idle or timed-out hook with SIGKILL on the hook's
	// process group, which our children (in groups of their own) would survive; the
	// kernel kills them when we die instead. (Go does not retire the threads that
	// start children, so this fires when the process dies, not earlier.) An ssh master
	// started with -f forks away from it and outlives us, as it should.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	exited := make(chan struct{})
	cmd.Cancel = killGroup(cmd, exited)
	cmd.WaitDelay = waitDelay

	if err := cmd.Start(); err != nil {
		errR.Close()
		errW.Close()
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	errW.Close()
	copied := make(chan struct{})
	go func() {
		io.Copy(stderr, errR)
		close(copied)
	}()
	err = cmd.Wait()
	close(exited)
	if ctx.Err() != nil {
		// The leader is reaped; members of its group that ignored SIGTERM must not
		// outlive the cancelled command.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// The process is gone: whatever is still to come on stderr comes at once, unless
	// something else holds the pipe (a cancelled ssh's master, a leftover child).
	grace := waitDelay
	if ctx.Err() != nil {
		grace = stderrGrace
	}
	select {
	case <-copied:
	case <-time.After(grace):
		errR.SetReadDeadline(time.Now())
		<-copied
	}
	errR.Close()
	return runError(ctx, argv, err, tail)
}

// killGroup is the cancel of cmd: SIGTERM to its process group, then SIGKILL after
// killGrace unless it exited (exited closed) by then.
func killGroup(cmd *exec.Cmd, exited <-chan struct{}) func() error {
	return func() error {
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		go func() {
			t := time.NewTimer(killGrace)
			defer t.Stop()
			select {
			case <-t.C:
				syscall.Kill(-pgid, syscall.SIGKILL)
			case <-exited:
			}
		}()
		return nil
	}
}

// runError turns the result of a command's Wait into the package's errors.
func runError(ctx context.Context, argv []string, err error, tail *Tail) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("command %s: %w", shorten(QuoteCommand(argv)), ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Argv: argv, Code: ee.ExitCode(), StderrTail: tail.String()}
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		return fmt.Errorf("command %s exited but a process it left behind kept its output open: %w", shorten(QuoteCommand(argv)), err)
	}
	// The command succeeded but copying one of its streams failed (for instance the
	// Stdout writer returned an error).
	return fmt.Errorf("command %s: %w", shorten(QuoteCommand(argv)), err)
}

// Tail keeps the last bytes written to it (for the end of a command's stderr in error
// messages); it is safe for concurrent use.
type Tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		p = p[len(p)-t.max:]
		t.buf = append(t.buf[:0], p...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// NewTail keeps the last max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

// LastLines returns the last n non-blank lines of s joined with "; ", for one-line
// error messages.
func LastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(strings.TrimRight(l, "\r"))
		if l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// shorten keeps long command lines (lists of store paths) readable in messages.
func shorten(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
