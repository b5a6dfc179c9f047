package hook

import (
	"context"
	"fmt"
	"time"

	"offload/locking"
)

// Queued builds. The daemon asks again about a postponed build only at its next poll,
// 5 s later (docs/hook.md), so a slot that frees meanwhile stays idle.
// Instead, when every build slot of a machine is taken, the hook may accept a build
// into the machine's queue, which has one place per slot: it holds the place, then
// takes the first build slot that frees, within slotPoll. A machine still never runs
// more than parallel-builds builds; the daemon gets its answer at once.

// slotPoll is how often a queued build tries the machine's build slots, and
// downCheckEvery how often it checks whether the machine went down meanwhile.
const (
	slotPoll       = 20 * time.Millisecond
	downCheckEvery = time.Second
)

// waitForSlot turns d, a place in its machine's queue, into one of the machine's build
// slots. If the machine goes down meanwhile (another hook recorded a failure), another
// machine with a free slot may take the build; if none can, the build keeps waiting for
// its machine, and ends as a transient failure only when neither it nor another could
// take it within queueBound: one slow or failed answer must not fail every build in
// the queue at once.
func (h *Hook) waitForSlot(ctx context.Context, req Request, d *decision) error {
	m := d.machine
	n := max(m.ParallelBuilds, 1)
	h.note("all %d build slots of machine '%s' are in use; '%s' takes the first that frees", n, m.Display(), req.Drv)
	every := h.ProgressEvery
	if every <= 0 {
		every = progressEvery
	}
	start := time.Now()
	lastCheck, lastSay := start, start
	var downFrom time.Time // when the machine was first seen down, while we wait
	for {
		slot, _, err := locking.AcquireSlot(h.layout.Slots(m.ID()), n, "building "+req.Drv)
		if err != nil {
			return fmt.Errorf("waiting for a build slot of machine '%s': %w", m.Display(), err)
		}
		if slot != nil {
			d.release() // the place in the queue
			d.slot, d.queued = slot, false
			return nil
		}
		now := time.Now()
		if now.Sub(lastCheck) >= downCheckEvery {
			lastCheck = now
			if health, err := h.state.Health(m.StateKey()); err == nil && health.Down(h.Now()) {
				if downFrom.IsZero() {
					downFrom = now
				}
				if moved, err := h.requeueElsewhere(ctx, req, d); moved || err != nil {
					return err
				}
				if now.Sub(downFrom) >= queueBound {
					d.release()
					return fmt.Errorf("machine '%s' has been down for %s while '%s' waited for one of its build slots, and no other machine could take it", m.Display(), queueBound, req.Drv)
				}
			} else {
				downFrom = time.Time{}
			}
		}
		if now.Sub(lastSay) >= every {
			// Also resets the daemon's max-silent-time clock, which runs while we wait.
			lastSay = now
			h.note("'%s' still waits for a build slot of machine '%s' (%s so far)", req.Drv, m.Display(), now.Sub(start).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for a build slot of machine '%s': %w", m.Display(), ctx.Err())
		case <-time.After(slotPoll):
		}
	}
}

// queueBound is how long a queued build waits for its machine once that machine is
// down, when no other machine can take it.
const queueBound = 5 * time.Minute

// requeueElsewhere moves a queued build whose machine went down to another machine
// with a free slot (moved); when none can take it, the build stays in its place.
func (h *Hook) requeueElsewhere(ctx context.Context, req Request, d *decision) (moved bool, err error) {
	down := d.machine
	nd := h.decideExcluding(ctx, committed(req), map[string]bool{down.ID(): true}, false)
	if nd.slot == nil {
		return false, nil
	}
	d.release()
	h.note("machine '%s' went down while '%s' waited for it; using machine '%s'", down.Display(), req.Drv, nd.machine.Display())
	*d = nd
	return true, nil
}
