package hook

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"offload/machines"
	"offload/sshexec"
)

// remoteSlot is one of the machine's own build slots, shared by every host that
// offloads to it (so that parallel-builds holds on the machine), held on the daemon
// path by a small remote shell (slotHoldScript) that lives until we close its stdin:
// until the build ends, or until this hook dies, since its ssh dies with it and sshd
// then closes the session. A machine without flock(1) has no shared slots.
type remoteSlot struct {
	stdin    io.WriteCloser
	lines    chan string
	done     chan error
	closed   bool // stdin closed: the slot is let go
	released bool // and the session's end waited for
	// cancel stops the session's ssh: a slot let go before it was known to be held
	// (its script may still be waiting for one) ends at once.
	cancel context.CancelFunc
	// mem follows the machine's available memory while the slot is held (its
	// MemAvailable samples, in kB): what it fell by is what the build took at most.
	mem     memSamples
	sampled chan struct{} // closed when the samples are all read
}

// memSamples are the first and the lowest MemAvailable samples, in kB.
type memSamples struct {
	first, low int64
	n          int
}

func (m *memSamples) add(kb int64) {
	if m.n == 0 || kb < m.low {
		m.low = kb
	}
	if m.n == 0 {
		m.first = kb
	}
	m.n++
}

// peakBytes is how much the available memory fell below its first sample (0: not
// known, fewer than two samples). Anything else that ran on the machine then counts
// too: an upper bound of the build's peak, never below it (unless the build's peak
// fell between two samples a second apart).
func (m memSamples) peakBytes() int64 {
	if m.n < 2 || m.low >= m.first {
		return 0
	}
	return (m.first - m.low) * 1024
}

// spareSlot is a slot of machine id taken before the accept (speculate), waiting for
// the offload to that machine.
type spareSlot struct {
	id   string
	slot *remoteSlot
}

// takeSpare returns the slot taken for m before the accept, if any (once).
func (h *Hook) takeSpare(m *machines.Machine) *remoteSlot {
	s := h.spare.slot
	if s == nil || h.spare.id != m.ID() {
		return nil
	}
	h.spare = spareSlot{}
	return s
}

// dropSpare lets go of a slot taken before the accept that no offload used (the
// machine took the shell path, whose session takes its own, or another machine got
// the build).
func (h *Hook) dropSpare() {
	if h.spare.slot != nil {
		h.spare.slot.letGo()
	}
	h.spare = spareSlot{}
}

// holdRemoteSlot starts taking a slot; wait says when it is held.
func (h *Hook) holdRemoteSlot(ctx context.Context, m *machines.Machine, t sshexec.Target, req Request) *remoteSlot {
	return h.slotSession(ctx, t, append([]string{"sh", "-c", slotHoldScript, "sh"}, slotHoldArgs(m, req)...))
}

// slotHoldArgs are slotHoldScript's arguments for req on m.
func slotHoldArgs(m *machines.Machine, req Request) []string {
	holder := rootHost() + " " + strconv.Itoa(os.Getpid())
	return []string{rootsDir, strconv.Itoa(max(m.ParallelBuilds, 1)), holder, req.Drv}
}

// probeHold asks m for the facts of a probe and then takes one of its build slots, in
// one remote shell (probeHoldScript): the facts, slots counted before this one is
// taken, come within timeout, and the slot follows as holdRemoteSlot's does. gated:
// the shell takes the slot only once told to (probeGateScript, goAhead).
func (h *Hook) probeHold(ctx context.Context, m *machines.Machine, t sshexec.Target, req Request, storeDir string, timeout time.Duration, gated bool) (*machines.Probe, *remoteSlot, error) {
	script := probeHoldScript
	if gated {
		script = probeGateScript
	}
	args := append([]string{"sh", "-c", script, "sh", storeDir}, slotHoldArgs(m, req)...)
	s := h.slotSession(ctx, t, args)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var facts strings.Builder
	for {
		select {
		case l, ok := <-s.lines:
			switch {
			case !ok:
				return nil, nil, s.ended("the session ended before the machine said how it is")
			case l != lineFactsEnd:
				facts.WriteString(l + "\n")
				continue
			}
			p, err := probeOf(facts.String())
			if err != nil {
				s.letGo()
				return nil, nil, err
			}
			return p, s, nil
		case <-timer.C:
			s.letGo()
			return nil, nil, &SlowError{Within: timeout}
		}
	}
}

// slotSession runs argv, a slot script, with its stdout lines on the slot's channel.
func (h *Hook) slotSession(ctx context.Context, t sshexec.Target, argv []string) *remoteSlot {
	ctx, cancel := context.WithCancel(ctx)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &remoteSlot{stdin: inW, lines: make(chan string, 16), done: make(chan error, 1), cancel: cancel}
	go func() {
		err := h.Runner.RunRemote(ctx, t, argv, sshexec.Stdio{Stdin: inR, Stdout: outW, Stderr: io.Discard})
		outW.Close()
		inR.CloseWithError(io.ErrClosedPipe)
		s.done <- err
	}()
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	return s
}

// ended is why the session ended, once its output has: its error, else why (it ended
// where the script says more). The error stays for whoever asks next.
func (s *remoteSlot) ended(why string) error {
	err := <-s.done
	s.done <- err
	if err == nil {
		err = errors.New(why)
	}
	return err
}

// wait returns once the slot is held (or the machine has no flock), saying while it
// waits that every slot of the machine is taken, by other hosts too.
func (s *remoteSlot) wait(ctx context.Context, h *Hook, m *machines.Machine, drv string) error {
	every := h.ProgressEvery
	if every <= 0 {
		every = progressEvery
	}
	var since, said time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case l, ok := <-s.lines:
			switch {
			case !ok:
				return fmt.Errorf("taking one of its build slots: %w", s.ended("the session ended"))
			case l == lineBuilding:
				s.sampled = make(chan struct{})
				go s.sample()
				return nil
			case l == lineNoFlock:
				return nil
			case l != lineWaiting:
				return fmt.Errorf("said %q where the slot script says %q (does the remote user's shell start-up print on stdout?)", l, lineBuilding)
			case since.IsZero():
				since, said = time.Now(), time.Now()
				h.say("offload: all %d build slots of machine '%s' are taken on the machine, by other hosts too; '%s' waits for one there", max(m.ParallelBuilds, 1), m.Display(), drv)
			case time.Since(said) >= every:
				said = time.Now()
				h.say("offload: '%s' still waits for a build slot on machine '%s' (%s so far)", drv, m.Display(), said.Sub(since).Round(time.Second))
			}
		}
	}
}

// sample reads the memory samples until the session ends.
func (s *remoteSlot) sample() {
	defer close(s.sampled)
	for l := range s.lines {
		if v, ok := strings.CutPrefix(l, lineMem+" "); ok {
			if kb, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && kb > 0 {
				s.mem.add(kb)
			}
		}
	}
}

// peakBytes is the most memory the build took at most, learned while the slot was
// held (0: unknown); call it after release.
func (s *remoteSlot) peakBytes() int64 {
	if s.sampled == nil {
		return 0
	}
	// The last samples are read just after the session ended.
	select {
	case <-s.sampled:
		return s.mem.peakBytes()
	case <-time.After(time.Second):
		return 0
	}
}

// release gives the slot back (closing the session) and waits for the session to end;
// a no-op after the first call.
func (s *remoteSlot) release() {
	s.letGo()
	if s.released {
		return
	}
	s.released = true
	// The slot is free once the remote shell is gone: wait for it (briefly; a session
	// that does not end frees it when our ssh dies with us), so that the next build,
	// ours or another host's, finds it free.
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(slotReleaseWait):
	}
}

// goAhead tells a gated probe's shell (probeGateScript) to take the slot; false when
// the session is gone.
func (s *remoteSlot) goAhead() bool {
	if s.closed {
		return false
	}
	if _, err := io.WriteString(s.stdin, lineHold+"\n"); err != nil {
		s.letGo()
		return false
	}
	return true
}

// letGo gives the slot back without waiting for the session to end (release waits);
// a no-op after the first call.
func (s *remoteSlot) letGo() {
	if s.closed {
		return
	}
	s.closed = true
	s.stdin.Close()
	if s.sampled == nil {
		s.cancel()
		go func() {
			for range s.lines {
			}
		}()
	}
}

// slotReleaseWait bounds the wait for the slot's session to end.
const slotReleaseWait = 10 * time.Second
