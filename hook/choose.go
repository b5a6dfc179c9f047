package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"offload/locking"
	"offload/machines"
	"offload/sshexec"
)

// decision is the outcome of one request: an answer, and for an accept the machine
// and the build slot held on it.
type decision struct {
	answer  string // "accept", "decline", "postpone"
	machine *machines.Machine
	// target is how the offload reaches machine: settled once, when the machine was
	// taken into the choice, and used by the probe, the reachability check and the
	// offload's session alike (so that all three share one ssh connection).
	target sshexec.Target
	slot   *locking.Lock
	// queued: slot is a place in the machine's queue, not a build slot; the build
	// waits for one of the machine's build slots after the accept (waitForSlot).
	queued bool
	local  bool // declined because building here is cheapest (placement)
	// held is the machine's own build slot, taken on the daemon path while it was
	// probed (speculate): the offload uses it instead of taking one.
	held *remoteSlot
}

func (d *decision) release() {
	if d.slot != nil {
		d.slot.Release()
		d.slot = nil
	}
	if d.held != nil {
		d.held.letGo()
		d.held = nil
	}
}

func (h *Hook) decide(ctx context.Context, req Request) decision {
	return h.decideExcluding(ctx, req, nil, true)
}

// Verdict is what the hook would answer to a request.
type Verdict struct {
	Answer  string            // "accept", "decline" or "postpone"
	Machine *machines.Machine // where an accept would go
	Queued  bool              // the accept would wait in the machine's queue
	Local   bool              // a decline because building here is cheapest
}

// DecideDryRun tells what the hook would answer to req right now, and writes its
// reasoning to w, one line per fact (without the "offload: " of the hook's messages).
// It makes the same choice as a real request, except that it takes no build slot and
// no queue place (it only counts the free ones), opens no connection to a machine whose
// probe is cached, and writes none of the machines' state (backoff, probe cache,
// notices). The machines that need it are probed.
func (h *Hook) DecideDryRun(ctx context.Context, req Request, w io.Writer) Verdict {
	h.init()
	out := h.Out
	h.Out, h.dryRun = w, true
	defer func() { h.Out, h.dryRun = out, false }()
	d := h.decide(ctx, req)
	d.release()
	return Verdict{Answer: d.answer, Machine: d.machine, Queued: d.queued, Local: d.local}
}

// candidate is a matching machine on which we hold a free slot, waiting for its probe.
type candidate struct {
	m      *machines.Machine
	target sshexec.Target // how this request reaches m (see decision.target)
	slot   *locking.Lock
	probe  *machines.Probe
	live   bool // probed over ssh for this request, not taken from the cache
	// queued: every build slot is taken and slot is a place in the machine's queue.
	queued bool
	err    error
	// speculate: take the machine's own build slot in the probe's shell (speculate);
	// held is that slot. gated: only once the machine is chosen (held.goAhead).
	speculate bool
	gated     bool
	held      *remoteSlot
}

// decideExcluding applies the choice rules (docs/hook.md): decline when nothing
// matches (or when every matching machine is down or drained and the daemon can build
// locally, or when building here is cheapest: place), postpone when matching machines
// are busy, overloaded or (with no local slot) down, accept the cheapest usable one
// that is reachable now otherwise. With queue, a machine whose build slots are all
// taken may still be chosen when a place in its queue is free (one per slot); its
// estimate counts the wait, and without estimates it comes after every machine with a
// free slot.
func (h *Hook) decideExcluding(ctx context.Context, req Request, exclude map[string]bool, queue bool) decision {
	matching, drained := h.undrained(h.matchingMachines(req, exclude))
	if len(matching) == 0 {
		if drained && !(req.WantsLocal && h.Conf.Fallback != "wait") {
			return decision{answer: "postpone"} // until a machine is undrained
		}
		return decision{answer: "decline"}
	}
	if h.Runner.NoSSH != nil {
		// Offloading cannot work from this host until ssh is installed; no machine is
		// to blame, and the daemon can build it here.
		h.note("%v", h.Runner.NoSSH)
		return decision{answer: "decline"}
	}
	now := h.Now()
	cands, down, busy := h.takeSlots(req, matching, now, queue)
	h.speculate(req, cands)
	h.probeAll(ctx, req, cands, now)
	for _, c := range cands {
		if c.probe == nil {
			down = append(down, c.m)
		}
	}
	best, nbusy, ndown, local := h.pick(ctx, req, cands)
	for _, c := range cands {
		if c.held != nil && c != best {
			c.held.letGo()
			c.held = nil
		}
	}
	if best != nil && best.held != nil && best.gated && !best.held.goAhead() {
		best.held = nil // its session is gone: the offload takes the slot itself
	}
	if local {
		return decision{answer: "decline", local: true} // the daemon builds it: cheapest here
	}
	busy += nbusy
	down = append(down, ndown...)
	if best != nil {
		return decision{answer: "accept", machine: best.m, target: best.target, slot: best.slot, queued: best.queued, held: best.held}
	}
	if busy == 0 && len(down) > 0 {
		return h.allDown(req, down)
	}
	return decision{answer: "postpone"}
}

// matchingMachines reads the machines file and keeps the machines that can build req
// and are not excluded, each once.
func (h *Hook) matchingMachines(req Request, exclude map[string]bool) []*machines.Machine {
	var matching []*machines.Machine
	seen := map[string]bool{}
	for _, m := range h.loadMachines() {
		if ok, _ := m.Matches(req.System, req.Features); !ok || seen[m.ID()] || exclude[m.ID()] {
			continue
		}
		seen[m.ID()] = true
		matching = append(matching, m)
	}
	return matching
}

// takeSlots skips the machines in backoff and takes a free build slot on each of the
// others (in a dry run it only counts them), else, with queue, a free place in its
// queue; machines with neither are busy.
func (h *Hook) takeSlots(req Request, matching []*machines.Machine, now time.Time, queue bool) (cands []*candidate, down []*machines.Machine, busy int) {
	for _, m := range matching {
		health, err := h.state.Health(m.StateKey())
		if err != nil {
			h.note("%v", err) // a damaged state file counts as healthy
		}
		if health.Down(now) {
			h.sayDown(m, health, now)
			down = append(down, m)
			continue
		}
		slots := max(m.ParallelBuilds, 1)
		c := &candidate{m: m, target: h.target(m)}
		if h.dryRun {
			free := freeSlots(h.layout.Slots(m.ID()), slots)
			if free > 0 || !queue {
				h.note("machine '%s' has %d of %d build slots free", m.Display(), free, slots)
			} else {
				qfree := freeSlots(h.layout.Queue(m.ID()), slots)
				h.note("machine '%s' has 0 of %d build slots free and %d of %d places in its queue", m.Display(), slots, qfree, slots)
				c.queued = qfree > 0
			}
			if free == 0 && !c.queued {
				busy++
				continue
			}
		} else {
			slot, _, err := locking.AcquireSlot(h.layout.Slots(m.ID()), slots,
				fmt.Sprintf("building %s", req.Drv))
			if err == nil && slot == nil && queue {
				slot, _, err = locking.AcquireSlot(h.layout.Queue(m.ID()), slots,
					fmt.Sprintf("waiting to build %s", req.Drv))
				c.queued = slot != nil
			}
			if err != nil {
				h.note("machine '%s': %v", m.Display(), err)
				busy++
				continue
			}
			if slot == nil {
				h.note("machine '%s' is busy: all %d build slots in use", m.Display(), slots)
				busy++
				continue
			}
			c.slot = slot
		}
		cands = append(cands, c)
	}
	return cands, down, busy
}

// pick ranks the probed candidates, orders the usable ones by the cost of the build
// there (place), and returns the cheapest usable one that is reachable now, with the
// build slot still held; it releases every other slot. Overloaded, low-on-disk and
// low-on-memory machines count as busy (they may get better); a usable machine that is
// not reachable now counts as down. local: building here is cheapest, and every slot
// is released.
func (h *Hook) pick(ctx context.Context, req Request, cands []*candidate) (best *candidate, busy int, down []*machines.Machine, local bool) {
	var cs []machines.Candidate
	for _, c := range cands {
		cs = append(cs, machines.Candidate{M: c.m, Probe: c.probe, Err: c.err, Queued: c.queued})
	}
	vs, local := h.place(ctx, req, freeFirst(machines.Rank(cs, h.Rand), cands), cands)
	if local {
		for _, c := range cands {
			if c.slot != nil {
				c.slot.Release()
			}
		}
		return nil, 0, nil, true
	}
	for _, v := range vs {
		c := findCandidate(cands, v.M)
		switch {
		case v.Usable && best == nil:
			if err := h.reachable(ctx, c); err != nil {
				h.note("%v", err)
				down = append(down, c.m)
				break
			}
			best = c
			if h.dryRun {
				h.note("%s", v.Reason)
			} else {
				h.note("normalized load on machine '%s' is %.2f", v.M.Display(), c.probe.NormalizedLoad())
			}
			continue
		case v.Usable:
			if h.dryRun {
				h.note("%s", v.Reason)
			}
		case c.probe != nil:
			busy++
			h.note("%s", v.Reason)
		default:
			h.note("%s", v.Reason)
		}
		if c.slot != nil {
			c.slot.Release()
		}
	}
	return best, busy, down, false
}

// reachable checks, before the hook commits to c, that its machine answers now: the
// probe cache saves the load probe, never the connection (after "# accept" there is
// no way back to a local build). A machine probed for this request is reachable; one
// whose probe came from the cache needs a live shared connection or a fresh one. A
// machine that has neither is recorded for backoff.
func (h *Hook) reachable(ctx context.Context, c *candidate) error {
	if c.live || h.dryRun {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*h.connectTimeout())
	defer cancel()
	err := h.Runner.Connect(ctx, c.target)
	if err == nil {
		return nil
	}
	h.record(c.m, err)
	return fmt.Errorf("machine '%s' answered a probe recently but cannot be reached now: %w", c.m.Display(), err)
}

// record puts m into backoff for failure (not in a dry run, which changes no state).
// failure is the bare cause, as every error below the hook's per-machine boundary is:
// the state file keeps it unnamed, and whoever shows it names the machine once.
func (h *Hook) record(m *machines.Machine, failure error) {
	if h.dryRun {
		return
	}
	if err := h.state.RecordFailure(m.StateKey(), failure, h.Now()); err != nil {
		h.note("%v", err)
	}
}

// freeSlots counts the slots nobody holds, without taking one (for explain).
func freeSlots(dir string, n int) int {
	free := 0
	for i := 0; i < n; i++ {
		if _, _, held, err := locking.Holder(filepath.Join(dir, strconv.Itoa(i))); err == nil && !held {
			free++
		}
	}
	return free
}

// sayDown tells why a machine in backoff is skipped: at most once a minute per machine
// across hook processes, since postponed requests come back every 5 s.
func (h *Hook) sayDown(m *machines.Machine, health machines.Health, now time.Time) {
	if !h.dryRun {
		if !health.NoticeDue(now, time.Minute) {
			return // said recently: no need to read the state again
		}
		if ok, err := h.state.Notice(m.StateKey(), now, time.Minute); err == nil && !ok {
			return
		}
	}
	h.note("machine %s is down; next try in %s", downSince(m, health), health.RetryAfter.Sub(now).Round(time.Second))
}

// downSince describes a down machine: "'name' (since TIME: last error)".
func downSince(m *machines.Machine, health machines.Health) string {
	since := "just now"
	if !health.DownSince.IsZero() {
		since = "since " + health.DownSince.Format(time.RFC3339)
	}
	part := fmt.Sprintf("'%s' (%s", m.Display(), since)
	if health.LastError != "" {
		part += ": " + health.LastError
	}
	return part + ")"
}

// freeFirst puts the machines with a free build slot before those where the build would
// wait in the queue, keeping the ranking's order within each group.
func freeFirst(vs []machines.Verdict, cands []*candidate) []machines.Verdict {
	var free, queued []machines.Verdict
	for _, v := range vs {
		if findCandidate(cands, v.M).queued {
			queued = append(queued, v)
		} else {
			free = append(free, v)
		}
	}
	return append(free, queued...)
}

func findCandidate(cs []*candidate, m *machines.Machine) *candidate {
	for _, c := range cs {
		if c.m == m {
			return c
		}
	}
	return nil
}

// allDown handles a request whose matching machines are all down (docs/hook.md,
// choice rule 7): let the
// daemon build locally when it has a free slot, unless the user said to wait.
func (h *Hook) allDown(req Request, down []*machines.Machine) decision {
	if req.WantsLocal && h.Conf.Fallback != "wait" {
		// Each machine's own line said why (a probe's failure, or its backoff within
		// the last minute): the summary names them only, so that a cause and its fix
		// are said once.
		var parts []string
		for _, m := range down {
			parts = append(parts, "machine '"+m.Display()+"'")
		}
		h.note("every machine for %s is down (%s); building locally", req.System, strings.Join(parts, ", "))
		return decision{answer: "decline"}
	}
	return decision{answer: "postpone"}
}

// probeAll fills in each candidate's load, in parallel, from the state cache when it
// is fresh enough, else with one ssh round trip each: at most maxProbes at once, in
// the machines file's order.
func (h *Hook) probeAll(ctx context.Context, req Request, cands []*candidate, now time.Time) {
	var wg sync.WaitGroup
	running := make(chan struct{}, maxProbes)
	for _, c := range cands {
		if health, err := h.state.Health(c.m.StateKey()); err == nil {
			// A machine that was full may have a free slot now: asked again rather
			// than postponed until the cache expires.
			if p := health.FreshProbe(now, h.Conf.ProbeMaxAge); p != nil && (c.queued || !p.RemoteFull(c.m.ParallelBuilds)) {
				c.probe = p
				if c.speculate && !c.gated {
					c.held = h.holdRemoteSlot(ctx, c.m, c.target, req)
				}
				continue
			}
		}
		wg.Add(1)
		running <- struct{}{}
		go func(c *candidate) {
			defer wg.Done()
			defer func() { <-running }()
			var p *machines.Probe
			var err error
			if c.speculate {
				p, c.held, err = h.probeHold(ctx, c.m, c.target, req, h.Conf.StoreDir, 2*h.connectTimeout(), c.gated)
				if p != nil {
					p.Time = h.Now()
				}
			} else {
				p, err = h.probe(ctx, c)
			}
			if err != nil {
				c.err = err
				// A machine that refused, could not be reached or would not let us in goes
				// into backoff; one that is only slow to answer (a loaded machine) is
				// skipped for this request, and asked again at the next.
				var slow *SlowError
				if !errors.As(err, &slow) {
					h.record(c.m, err)
				}
				return
			}
			c.probe, c.live = p, true
			if !h.dryRun {
				if rerr := h.state.RecordSuccess(c.m.StateKey(), p, h.Now()); rerr != nil {
					h.note("%v", rerr)
				}
			}
		}(c)
	}
	wg.Wait()
}

// maxProbes bounds the probes running at once. A machines file of a thousand entries
// otherwise starts a thousand ssh processes together, and on a small host the probe of
// the one machine that answers then took more than its 10 s (the Decision benchmark,
// 1000 machines): a machine that does not answer within its time is skipped, so a
// bound keeps the answering ones answering. A machine that hangs holds its place for
// its probe's time at most.
const maxProbes = 64

// speculate takes, on the daemon path, the machine's own build slot in the shell that
// probes it, for a machine where this host has a build slot (not a queue place): the
// probe and the slot then cost one shell start instead of two in a row around the
// accept, which on a real machine whose user's shell start-up is slow is most of a
// tiny offload. With one candidate the slot is taken at once (its facts still come
// first), and let go if the machine is not chosen after all (busy, overloaded, or
// cheaper here). With several, each probe's shell waits after its facts, and only the
// chosen machine's takes its slot (gated): no machine holds a slot for a build that
// goes elsewhere. A candidate whose probe is cached is not probed: with several, the
// offload takes its slot after the accept.
func (h *Hook) speculate(req Request, cands []*candidate) {
	if h.dryRun {
		return
	}
	for _, c := range cands {
		if c.slot == nil || c.queued || !h.daemonPathLikely(c.m) {
			continue
		}
		c.speculate, c.gated = true, len(cands) > 1
	}
}

// probe asks a machine for its load; a machine that does not answer in time counts as
// unreachable (never as idle).
func (h *Hook) probe(ctx context.Context, c *candidate) (*machines.Probe, error) {
	m := c.m
	p, err := ProbeMachine(ctx, h.Runner, c.target, h.Conf.StoreDir, max(m.ParallelBuilds, 1), 2*h.connectTimeout())
	if p != nil {
		p.Time = h.Now()
	}
	return p, err
}

// probeOf makes a probe of a factsScript answer.
func probeOf(out string) (*machines.Probe, error) {
	f, err := ParseFacts(out)
	if err != nil {
		return nil, err
	}
	return probeFromFacts(f)
}

// probeFromFacts is the probe the hook's choice reads from a machine's facts.
func probeFromFacts(f Facts) (*machines.Probe, error) {
	if f.Cores < 1 {
		return nil, errors.New("no core count in its answer")
	}
	held := -1
	if f.Slots != nil {
		held = f.Slots.Held
	}
	return &machines.Probe{Load1: f.Load1, Cores: f.Cores, FreeBytes: f.FreeBytes, MemAvailable: f.MemAvailable, Time: time.Now(), RemoteSlotsHeld: held}, nil
}

// ProbeMachine reads a machine's load, cores, free store space, clock and how many of
// its own build slots 0 .. slots-1 are taken, in one ssh round trip (AskMachine),
// giving up after timeout. Its errors do not name the machine: the caller does.
func ProbeMachine(ctx context.Context, r *sshexec.Runner, t sshexec.Target, storeDir string, slots int, timeout time.Duration) (*machines.Probe, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	f, err := askFacts(ctx, r, t, storeDir, slots, false)
	if err != nil {
		if ctx.Err() != nil {
			// err is the killed ssh's command line: it says nothing more.
			return nil, &SlowError{Within: timeout}
		}
		return nil, err
	}
	return probeFromFacts(f)
}

func (h *Hook) connectTimeout() time.Duration {
	if h.Runner != nil && h.Runner.ConnectTimeout > 0 {
		return h.Runner.ConnectTimeout
	}
	return 5 * time.Second
}

// SlowError is a machine that did not answer a probe in time while the connection
// itself was up: slow (loaded), not dead. It puts the machine into no backoff.
type SlowError struct {
	Within time.Duration
	Err    error
}

func (e *SlowError) Error() string { return fmt.Sprintf("no answer within %s", e.Within) }
func (e *SlowError) Unwrap() error { return e.Err }
