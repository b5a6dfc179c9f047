package hook

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"offload/storeio"
)

// After "# accept" the daemon cannot take a build back: the hook's exit status is the
// build's fate. So a failure that is not the build's own (the machine or the way to it
// failed: connection lost, machine dead or rebooted, its daemon gone, a transfer cut)
// makes the hook do the build again on the best machine that can take it: another one
// at once, or the same one once it answers. Only the build's own failure (100), its
// timeout (101), a failure of our own side, a refused archive, or running out of
// attempts end it.

// AttemptsEnv sets how many times an accepted build may be tried (default
// defaultAttempts).
const AttemptsEnv = "OFFLOAD_ATTEMPTS"

const defaultAttempts = 3

// retryWait bounds the wait for a machine to take a build again, when no build timeout
// bounds it already; retryPoll is how often it asks, and waitSayEvery how often it
// says that it still waits (under a minute: the daemon's max-silent-time runs).
const (
	retryWait    = 10 * time.Minute
	retryPoll    = 2 * time.Second
	waitSayEvery = 30 * time.Second
)

// parseAttempts reads $OFFLOAD_ATTEMPTS.
func parseAttempts(v string) int {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return defaultAttempts
	}
	return min(n, 20)
}

// retryable tells a failure of the machine or of the way to it from the build's own
// outcome and from our own side's failure.
func retryable(err error) bool {
	var early *beforeBuildError
	var mach *machineError
	var local *localError
	switch {
	case err == nil, errors.Is(err, ErrBuildFailed), errors.Is(err, ErrTimedOut):
		return false
	case errors.As(err, &local), storeio.IsRefusal(err):
		return false
	}
	return errors.As(err, &early) || errors.As(err, &mach)
}

// attempts runs the offload on d's machine, and again on the next machine that can take
// it while the failures are the machine's, within the attempts and the build's timeout.
func (h *Hook) attempts(ctx context.Context, req Request, d decision, inputs, outputs []string) error {
	limit := h.Conf.Attempts
	if limit < 1 {
		limit = defaultAttempts
	}
	deadline := time.Now().Add(retryWait)
	if h.Conf.BuildTimeout > 0 {
		deadline = time.Now().Add(time.Duration(h.Conf.BuildTimeout) * time.Second)
	}
	tried := map[string]bool{}
	for attempt := 1; ; attempt++ {
		m := d.machine
		tried[m.ID()] = true
		// The remote slot taken while the machine was probed goes to its offload.
		h.spare, d.held = spareSlot{id: m.ID(), slot: d.held}, nil
		err := h.offload(ctx, m, d.target, req, inputs, outputs)
		h.dropSpare()
		if !retryable(err) {
			var local *localError
			if err != nil && !errors.As(err, &local) {
				// The one boundary that names the machine: offload's errors say only
				// what went wrong. Our own side's failure names none.
				err = fmt.Errorf("machine '%s': %w", m.Display(), err)
			}
			return err
		}
		h.record(m, err)
		d.release()
		if attempt >= limit {
			return fmt.Errorf("'%s' failed %d times for want of a working machine; the last, machine '%s': %s", req.Drv, attempt, m.Display(), err)
		}
		h.note("attempt %d of '%s' failed on machine '%s': %s; trying again", attempt, req.Drv, m.Display(), err)
		next, werr := h.nextMachine(ctx, req, tried, deadline)
		if werr != nil {
			return fmt.Errorf("'%s' failed on machine '%s' (%s), and %w", req.Drv, m.Display(), err, werr)
		}
		d = next
		h.note("attempt %d of '%s': machine '%s'", attempt+1, req.Drv, d.machine.Display())
	}
}

// nextMachine finds a machine for another attempt: one not tried yet, at once; else any
// that can take it (the one that failed included, once it answers again), waiting until
// deadline and saying so at least every waitSayEvery.
func (h *Hook) nextMachine(ctx context.Context, req Request, tried map[string]bool, deadline time.Time) (decision, error) {
	if d := h.decideExcluding(ctx, committed(req), tried, false); d.slot != nil {
		return d, nil
	}
	start := time.Now()
	said := start
	for {
		if time.Now().After(deadline) {
			return decision{}, fmt.Errorf("no machine could take it within %s", deadline.Sub(start).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return decision{}, ctx.Err()
		case <-time.After(retryPoll):
		}
		if d := h.decideExcluding(ctx, committed(req), nil, false); d.slot != nil {
			return d, nil
		}
		if time.Since(said) >= waitSayEvery {
			said = time.Now()
			h.note("'%s' waits for a machine to take it again (%s so far)", req.Drv, said.Sub(start).Round(time.Second))
		}
	}
}
