package hook

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"offload/machines"
	"offload/sshexec"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// session is the local side of one run of sessionScript.
type session struct {
	h       *Hook
	m       *machines.Machine
	req     Request
	outputs []string
	root    string      // this build's GC roots' name
	comp    Compression // both bulk streams', once the machine said what it has

	ctx    context.Context
	cancel context.CancelFunc
	// stdin and stdout are OS pipes handed to ssh as they are, so that nothing of
	// ours sits between ssh's exit and the end of RunRemote.
	stdin    *os.File
	sent     *countingWriter // counts what went into stdin
	stdout   *bufio.Reader
	stdoutR  *os.File
	stderr   *stderrRouter
	done     chan struct{} // closed when RunRemote returned
	runErr   error         // RunRemote's error, once done
	timedOut atomic.Bool   // the session was cut for the build timeout
	// framingErr is set when the machine's stdout broke the framing.
	framingErr error

	localMu  sync.Mutex
	localErr error // our own side's failure while sending

	learned learned // for placement (learn)
}

// startSession starts the ssh session running sessionScript on m.
func (h *Hook) startSession(ctx context.Context, m *machines.Machine, t sshexec.Target, req Request, outputs []string) (*session, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	var tok [8]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, err
	}
	token := hex.EncodeToString(tok[:])
	limit := func(secs int) string {
		if secs <= 0 {
			return ""
		}
		return strconv.Itoa(secs)
	}
	s := &session{h: h, m: m, req: req, outputs: outputs, root: rootName(req.Drv),
		stdin: inW, sent: &countingWriter{w: inW}, stdout: bufio.NewReaderSize(outR, 64<<10), stdoutR: outR,
		stderr: newStderrRouter(token, h.Log), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(ctx)
	argv := append([]string{"sh", "-c", sessionScript, "sh", rootsDir, s.root, req.Drv, token,
		limit(h.Conf.MaxSilentTime), limit(h.Conf.BuildTimeout), strconv.Itoa(max(m.ParallelBuilds, 1)),
		rootHost() + " " + strconv.Itoa(os.Getpid())}, outputs...)
	go func() {
		err := h.Runner.RunRemote(s.ctx, t, argv, sshexec.Stdio{Stdin: inR, Stdout: outW, Stderr: s.stderr})
		s.runErr = err
		close(s.done)
		// Our copies of ssh's ends: once closed, a write to stdin fails and stdout
		// ends (as soon as the ssh master, which may hold them too, let go).
		inR.Close()
		outW.Close()
	}()
	return s, nil
}

// wait waits for the session's end and returns RunRemote's error.
func (s *session) wait() error {
	<-s.done
	return s.runErr
}

// ended tells whether the session is over.
func (s *session) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// abort ends the session, whatever it was doing (a no-op once it ended), and waits for
// it. ssh does not signal the remote script: it notices its closed streams, and its
// trap removes its roots.
func (s *session) abort() {
	s.cancel()
	s.stdin.Close()
	s.stdoutR.Close()
	<-s.done
}

// line reads the next framing line of the session's stdout. An error means that the
// session ended (failure says why), or that the machine sent a line longer than any
// the script writes (framingErr: the session is aborted).
func (s *session) line() (string, error) {
	l, err := s.stdout.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		s.framingErr = fmt.Errorf("it sent a line of more than %d bytes where the offload script writes store paths", len(l))
		s.abort()
		return "", s.framingErr
	case err == io.EOF && len(l) > 0:
		return "", io.ErrUnexpectedEOF
	case err != nil:
		return "", err
	}
	return strings.TrimSuffix(string(l), "\n"), nil
}

// failure says why the session ended while the machine ran step, from RunRemote's
// error and the stderr of the phase. what says what was being done, without naming the
// machine: the hook's per-machine boundary (retry.go) names it.
func (s *session) failure(step, what string, tail *sshexec.Tail) error {
	if s.framingErr != nil {
		return s.framingErr
	}
	err := s.wait()
	var re *sshexec.RemoteError
	switch {
	case err == nil:
		return fmt.Errorf("%s: the session ended during %s", what, step)
	case s.ctx.Err() != nil && !errors.As(err, &re):
		return fmt.Errorf("%s: %w", what, s.ctx.Err())
	case errors.As(err, &re):
		msg := fmt.Sprintf("%s: %s exited with status %d", what, step, re.Code)
		if t := sshexec.LastLines(tail.String(), 3); t != "" {
			msg += ": " + t
		}
		return errors.New(msg)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// protocol is a session whose stdout broke the framing (a broken shell start-up
// printing on stdout, or a machine that lies).
func (s *session) protocol(got, want string) error {
	return fmt.Errorf("it said %q where the offload script says %q (does the remote user's shell start-up print on stdout?)", got, want)
}
