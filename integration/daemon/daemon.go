// Package daemon plays guix-daemon's side of the build hook protocol, the
// way nix/libstore/build.cc does it (see ../../../shared/spec/PROTOCOL.md):
// it starts the hook in a new session with cwd /, fd 0 a pipe for requests,
// fds 1 and 2 one shared pipe for replies and messages, fd 3 /dev/null and
// fd 4 the build log pipe; it writes request lines, reads until a line
// starting with "# ", sends the inputs and outputs lines after accept and
// reads the exit status.
//
// It is a test driver: it does not choose what to build, check outputs or
// enforce time limits (cmd/fakedaemon does that around it).
package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options are optional observers of the hook's output.
type Options struct {
	// Messages, when set, receives every fd 1/2 line that is not an answer,
	// as it arrives (with its newline).
	Messages io.Writer
	// Log, when set, receives everything the hook writes on fd 4, as it
	// arrives.
	Log io.Writer
	// Credential, when set, runs the hook as that user (a daemon that runs as an
	// unprivileged user, as Guix's guix-daemon user does).
	Credential *syscall.Credential
}

// Hook is a running build hook.
type Hook struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // fd 1/2 lines, "" never sent; closed at EOF
	opts  Options

	mu       sync.Mutex
	messages []string
	log      []byte
	last     time.Time // last output on fds 1/2 or 4
	logDone  chan struct{}
	waitOnce sync.Once
	// drainOnce starts the collection of the lines after the exchange; drained is
	// closed when fds 1/2 reached EOF and every line was collected.
	drainOnce sync.Once
	drained   chan struct{}
	waitErr   error
}

// ErrEOF is returned by Request when the hook closed fds 1/2 before
// answering ("unexpected EOF reading a line", says the daemon).
var ErrEOF = errors.New("unexpected EOF reading a line")

// BadReplyError is a "# " line that is not accept, decline or postpone.
type BadReplyError struct{ Reply string }

func (e *BadReplyError) Error() string { return fmt.Sprintf("bad hook reply `%s'", e.Reply) }

// Start starts the hook argv[0] with arguments argv[1:] and environment env,
// as the daemon does. ctx kills the hook's process group when done.
func Start(ctx context.Context, argv, env []string) (*Hook, error) {
	return StartWith(ctx, argv, env, Options{})
}

// StartWith is Start with observers.
func StartWith(ctx context.Context, argv, env []string, opts Options) (*Hook, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("start hook: empty argv")
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("start hook: %w", err)
	}
	defer devnull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start hook: %w", err)
	}
	logR, logW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("start hook: %w", err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout = outW // the same pipe for fds 1 and 2, as the daemon does
	cmd.Stderr = outW
	cmd.ExtraFiles = []*os.File{devnull, logW} // fd 3, fd 4
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: opts.Credential}
	stdin, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	outW.Close()
	logW.Close()
	if err != nil {
		outR.Close()
		logR.Close()
		return nil, fmt.Errorf("start hook %s: %w", argv[0], err)
	}
	h := &Hook{cmd: cmd, stdin: stdin, lines: make(chan string, 1024), opts: opts, last: time.Now(), logDone: make(chan struct{})}
	go h.readLines(outR)
	go h.readLog(logR)
	if ctx.Done() != nil {
		go func() {
			select {
			case <-ctx.Done():
				h.Kill()
			case <-h.logDone:
			}
		}()
	}
	return h, nil
}

func (h *Hook) readLines(r *os.File) {
	defer r.Close()
	defer close(h.lines)
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			h.mu.Lock()
			h.last = time.Now()
			h.mu.Unlock()
			h.lines <- line
		}
		if err != nil {
			return
		}
	}
}

func (h *Hook) readLog(r *os.File) {
	defer close(h.logDone)
	defer r.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			h.mu.Lock()
			h.log = append(h.log, buf[:n]...)
			h.last = time.Now()
			w := h.opts.Log
			h.mu.Unlock()
			if w != nil {
				w.Write(buf[:n])
			}
		}
		if err != nil {
			return
		}
	}
}

func (h *Hook) message(line string) {
	h.mu.Lock()
	h.messages = append(h.messages, strings.TrimSuffix(line, "\n"))
	w := h.opts.Messages
	h.mu.Unlock()
	if w != nil {
		io.WriteString(w, line)
	}
}

// Request writes "WANTS-LOCAL SYSTEM DRV FEATURES\n" and reads fd 1/2
// lines until one starts with "# ". It returns "accept", "decline" or
// "postpone"; another reply is a *BadReplyError, EOF is ErrEOF.
func (h *Hook) Request(wantsLocal bool, system, drvPath string, features []string) (string, error) {
	local := "0"
	if wantsLocal {
		local = "1"
	}
	line := fmt.Sprintf("%s %s %s %s\n", local, system, drvPath, strings.Join(features, ","))
	if _, err := io.WriteString(h.stdin, line); err != nil {
		// The hook is gone (EPIPE): collect what it said, then it is the EOF the
		// daemon would read.
		for l := range h.lines {
			h.message(l)
		}
		return "", fmt.Errorf("%w (writing the request to the hook: %v)", ErrEOF, err)
	}
	for l := range h.lines {
		if reply, ok := strings.CutPrefix(l, "# "); ok {
			reply = strings.TrimSuffix(reply, "\n")
			switch reply {
			case "accept", "decline", "postpone":
				return reply, nil
			}
			return "", &BadReplyError{reply}
		}
		h.message(l)
	}
	return "", ErrEOF
}

// SendPaths writes the inputs line and the outputs line (each sorted, each
// path followed by a space) and closes fd 0, then keeps collecting the
// hook's messages.
func (h *Hook) SendPaths(inputs, outputs []string) error {
	var b strings.Builder
	for _, set := range [][]string{inputs, outputs} {
		s := append([]string(nil), set...)
		sort.Strings(s)
		for _, p := range s {
			b.WriteString(p + " ")
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(h.stdin, b.String())
	if cerr := h.stdin.Close(); err == nil {
		err = cerr
	}
	h.drain()
	if err != nil {
		return fmt.Errorf("send paths to hook: %w", err)
	}
	return nil
}

// drain collects the remaining fd 1/2 lines in the background, once.
func (h *Hook) drain() {
	h.drainOnce.Do(func() {
		h.drained = make(chan struct{})
		go func() {
			defer close(h.drained)
			for l := range h.lines {
				h.message(l)
			}
		}()
	})
}

// CloseStdin sends EOF on fd 0 (the hook must then exit 0) and keeps
// collecting messages.
func (h *Hook) CloseStdin() error {
	err := h.stdin.Close()
	h.drain()
	return err
}

// Wait waits for the hook to exit and for its output pipes to close. It
// returns the exit status, or signaled=true when a signal killed it.
func (h *Hook) Wait() (status int, signaled bool, err error) {
	h.waitOnce.Do(func() {
		h.waitErr = h.cmd.Wait()
		<-h.logDone
		// Every line the hook wrote is in Messages once Wait returns.
		h.drain()
		<-h.drained
	})
	ws, ok := h.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return -1, true, nil
	}
	var ee *exec.ExitError
	if h.waitErr != nil && !errors.As(h.waitErr, &ee) {
		return -1, false, fmt.Errorf("wait for hook: %w", h.waitErr)
	}
	return h.cmd.ProcessState.ExitCode(), false, nil
}

// Messages returns every fd 1/2 line that was not an answer, so far.
func (h *Hook) Messages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.messages...)
}

// Log returns everything written to fd 4 so far.
func (h *Hook) Log() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]byte(nil), h.log...)
}

// LastOutput is when the hook last wrote on fds 1/2 or 4 (or its start): the
// daemon's max-silent-time clock.
func (h *Hook) LastOutput() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// Pid returns the hook's process id (also its process group and session).
func (h *Hook) Pid() int { return h.cmd.Process.Pid }

// Kill sends SIGKILL to the hook's whole process group, as the daemon does.
func (h *Hook) Kill() {
	syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
}
