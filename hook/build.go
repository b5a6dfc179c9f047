package hook

import (
	"errors"
	"fmt"
	"offload/sshexec"
	"strings"
	"time"
)

// build waits for the build to start on the machine and to end, with its log relayed
// to fd 4, and classifies its failure. A failure before it starts is a
// *beforeBuildError.
func (s *session) build() error {
	h, m, drv := s.h, s.m, s.req.Drv
	if err := s.buildStarts(); err != nil {
		return &beforeBuildError{Err: err}
	}
	h.say("offloading '%s' to '%s'...", drv, m.Display())
	h.say("@ build-remote %s %s", drv, m.Display())
	began := time.Now()
	var timer *time.Timer
	if h.Conf.BuildTimeout > 0 {
		// Stop waiting locally too, so a hung connection cannot keep us alive.
		timer = time.AfterFunc(time.Duration(h.Conf.BuildTimeout)*time.Second+buildMargin, func() {
			s.timedOut.Store(true)
			s.cancel()
		})
	}
	l, err := s.line()
	for err == nil && l == lineAlive {
		l, err = s.line()
	}
	if timer != nil && !timer.Stop() {
		s.wait()
		return fmt.Errorf("no result %s after the build timeout: %w", buildMargin, ErrTimedOut)
	}
	switch {
	case err == nil && l == lineBuilt:
		s.learned.buildTime = time.Since(began)
		return nil
	case err == nil:
		s.abort()
		return s.protocol(l, lineBuilt)
	}
	var re *sshexec.RemoteError
	if errors.As(s.wait(), &re) {
		switch classify(s.stderr.tails[1].String(), drv) {
		case ExitTimedOut:
			return fmt.Errorf("derivation '%s' timed out: %w", drv, ErrTimedOut)
		case ExitBuildFailed:
			return fmt.Errorf("derivation '%s' failed: %w", drv, ErrBuildFailed)
		}
	}
	// Not the build's own failure: the session, the machine or its guix failed.
	return &machineError{Err: s.failure("`guix build`", "building '"+drv+"'", s.stderr.tails[1])}
}

// buildStarts waits for "offload-building", through the machine's wait for one of
// its own build slots (remoteSlotScript), which it tells the user about once, then
// every ProgressEvery (which also resets the daemon's max-silent-time clock).
func (s *session) buildStarts() error {
	h, m, drv := s.h, s.m, s.req.Drv
	step, what := "`guix build -d -r`", "rooting "+drv
	every := h.ProgressEvery
	if every <= 0 {
		every = progressEvery
	}
	var since, said time.Time
	for {
		l, err := s.line()
		switch {
		case err != nil:
			return s.failure(step, what, s.stderr.tails[0])
		case l == lineBuilding:
			return nil
		case l != lineWaiting:
			s.abort()
			return s.protocol(l, lineBuilding)
		case since.IsZero():
			since, said = time.Now(), time.Now()
			step, what = "the wait for a build slot", "waiting for a build slot"
			n := max(m.ParallelBuilds, 1)
			h.say("offload: all %d build slots of machine '%s' are taken on the machine, by other hosts too; '%s' waits for one there", n, m.Display(), drv)
		case time.Since(said) >= every:
			said = time.Now()
			h.say("offload: '%s' still waits for a build slot on machine '%s' (%s so far)", drv, m.Display(), said.Sub(since).Round(time.Second))
		}
	}
}

// buildMargin is how long after the build timeout we keep waiting for the machine.
const buildMargin = 60 * time.Second

// classify tells, from the end of `guix build`'s stderr, whether the build itself
// failed or timed out (the daemon's own messages, nix/libstore/build.cc), as opposed
// to guix not running at all.
func classify(stderr, drv string) int {
	timedOut, failed := false, false
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.Contains(line, drv) {
			continue
		}
		switch {
		case strings.Contains(line, "timed out after"):
			timedOut = true
		case strings.HasPrefix(line, "@ build-failed "+drv),
			strings.Contains(line, "build of `"+drv+"' failed"),
			strings.Contains(line, "builder for `"+drv+"' failed"):
			failed = true
		}
	}
	switch {
	case timedOut:
		return ExitTimedOut
	case failed:
		return ExitBuildFailed
	}
	return ExitTransient
}
