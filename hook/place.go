package hook

import (
	"cmp"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"offload/machines"
	"offload/placement"
	"offload/storeio"
)

// The hook's side of package placement: which machines are drained, what the inputs
// of a request weigh and where they already are, the cost of each usable machine and
// of the local build, and what each offload teaches (docs/hook.md, "Choosing a
// machine").

// minAskBytes: below it, asking the machines which inputs they hold costs about as much
// as sending them all (one round trip).
const minAskBytes = 1 << 20

// committed is req after "# accept": the daemon will not build it itself any more, so
// a second choice (failover, requeue) has no local option.
func committed(req Request) Request {
	req.WantsLocal = false
	return req
}

// undrained drops the drained machines of ms, saying so; drained tells whether any was.
func (h *Hook) undrained(ms []*machines.Machine) (out []*machines.Machine, drained bool) {
	for _, m := range ms {
		if mark, ok := placement.Drained(h.Conf.StateDir, m.ID()); ok {
			h.note("machine '%s' is drained %s: no new builds go there", m.Display(), mark)
			drained = true
			continue
		}
		out = append(out, m)
	}
	return out, drained
}

// place orders the usable verdicts of vs by the estimated cost of the build there,
// cheapest first, turns those that placement skips (memory) into busy ones, and tells
// whether the local machine is cheaper than any (local: the daemon has a free slot,
// WANTS-LOCAL 1, and OFFLOAD_FALLBACK is not wait). With no choice to make (one usable
// machine, no local slot) it only checks that machine's memory, reads no input and asks
// nothing; a dry run always shows every estimate. OFFLOAD_PLACEMENT=off keeps the
// ranking's order.
func (h *Hook) place(ctx context.Context, req Request, vs []machines.Verdict, cands []*candidate) ([]machines.Verdict, bool) {
	var usable, rest []machines.Verdict
	for _, v := range vs {
		if v.Usable {
			usable = append(usable, v)
		} else {
			rest = append(rest, v)
		}
	}
	canLocal := req.WantsLocal && h.Conf.Fallback != "wait"
	if h.Conf.Placement == "off" || len(usable) == 0 {
		return vs, false
	}
	// With one machine and no local slot there is no choice: only its memory counts.
	choice := h.dryRun || len(usable) > 1 || canLocal
	var job placement.Job
	switch {
	case filepath.IsAbs(req.Drv):
		job.Name = placement.DrvName(req.Drv)
	case h.dryRun:
		h.note("inputs: unknown (no .drv given): nothing to send, build time as for a build never seen")
	}
	if choice && job.Name != "" {
		if paths, err := placement.DrvInputs(req.Drv); err == nil {
			job.Inputs = h.inputClosure(ctx, paths)
		} else if h.dryRun {
			h.note("inputs: unknown (%v)", err)
		}
	}
	md := placement.Model{Params: h.params(), Learned: map[string]placement.History{}}
	if canLocal {
		md.LocalLoad = h.localLoad()
	}
	store := placement.Store{Dir: h.Conf.StateDir, Now: h.Now}
	opts := make([]placement.Option, len(usable))
	for i, v := range usable {
		c := findCandidate(cands, v.M)
		opts[i] = placement.Option{M: v.M, Probe: c.probe, Queued: c.queued}
		hist, err := store.Load(v.M.ID())
		if err != nil {
			h.note("%v", err)
		}
		md.Learned[v.M.ID()] = hist
	}
	if total := placement.Total(job.Inputs); choice && total >= minAskBytes {
		h.askHoldings(ctx, job, opts)
	}
	if h.dryRun && job.Name != "" {
		h.note("inputs: %d item%s, %.1f MiB; derivation name %q", len(job.Inputs), plural(len(job.Inputs)),
			float64(placement.Total(job.Inputs))/(1<<20), job.Name)
	}
	var ests []placement.Estimate
	for _, o := range opts {
		ests = append(ests, md.Remote(job, o))
	}
	if canLocal {
		ests = append(ests, md.Local(job))
	}
	best := placement.Cheapest(ests)
	if h.dryRun {
		for _, e := range ests {
			h.note("estimate: %s", e)
		}
	}
	// The machines, cheapest first (ties keep the ranking's order), then the others.
	order := make([]int, len(usable))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Compare(ests[a].Total(), ests[b].Total())
	})
	var out, skipped []machines.Verdict
	for _, i := range order {
		v := usable[i]
		if ests[i].Skip != "" {
			v.Usable = false
			v.Reason = "machine '" + v.M.Display() + "' is skipped: " + ests[i].Skip
			skipped = append(skipped, v)
			continue
		}
		out = append(out, v)
	}
	local := best >= 0 && ests[best].Local()
	switch {
	case local:
		h.note("building locally: %s", cheaper(ests, best))
	case best >= 0 && choice:
		h.note("cheapest: %s", cheaper(ests, best))
	}
	return append(append(out, skipped...), rest...), local
}

// cheaper is the winner's estimate and the total of the next best, in one line.
func cheaper(ests []placement.Estimate, best int) string {
	s := ests[best].String()
	next := -1
	for i, e := range ests {
		if i != best && e.Skip == "" && (next < 0 || e.Total() < ests[next].Total()) {
			next = i
		}
	}
	if next >= 0 {
		if ests[next].Local() {
			s += "; local " + secs(ests[next].Total())
		} else {
			s += "; next " + secs(ests[next].Total())
		}
	}
	return s
}

func secs(d time.Duration) string { return placement.Seconds(d) }

// askHoldings asks every option's machine, in parallel and within the probe's time
// limit, which of the job's inputs it holds; a machine that cannot say counts as
// holding none.
func (h *Hook) askHoldings(ctx context.Context, job placement.Job, opts []placement.Option) {
	paths := make([]string, len(job.Inputs))
	for i, in := range job.Inputs {
		paths[i] = in.Path
	}
	ask := h.holdings()
	ctx, cancel := context.WithTimeout(ctx, 2*h.connectTimeout())
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(opts))
	for i := range opts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts[i].Valid, errs[i] = ask(ctx, opts[i].M, paths)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			h.note("machine '%s' cannot tell which inputs it holds: %s", opts[i].M.Display(), err)
			opts[i].Valid = nil
		}
	}
}

// holdings is Holdings (by default one `guix archive --missing`), behind the state
// directory's cache of a few seconds; a dry run asks afresh and writes nothing.
func (h *Hook) holdings() placement.Holdings {
	ask := h.Holdings
	if ask == nil {
		ask = func(ctx context.Context, m *machines.Machine, paths []string) (map[string]bool, error) {
			// One QueryValidPaths (about a millisecond) on a machine that takes the daemon
			// path; one `guix archive --missing` (a Guile start) on the others.
			if h.Conf.Path != pathShell && h.readPath(m).Path != pathShell {
				conn, _, err := DialMachineDaemon(ctx, h.Runner, h.target(m), daemonSocket(m))
				if err == nil && conn != nil {
					defer conn.Close()
					conn.Trace = h.traceOp(m)
					got, err := conn.QueryValidPaths(ctx, paths)
					if err != nil {
						return nil, err
					}
					valid := make(map[string]bool, len(got))
					for _, p := range got {
						valid[p] = true
					}
					return valid, nil
				}
			}
			missing, _, _, err := AskMissing(ctx, h.Runner, h.target(m), paths)
			if err != nil {
				return nil, err
			}
			valid := make(map[string]bool, len(paths))
			for _, p := range paths {
				valid[p] = true
			}
			for _, p := range missing {
				delete(valid, p)
			}
			return valid, nil
		}
	}
	if h.dryRun {
		return ask
	}
	return placement.Cache{Dir: h.Conf.StateDir, Now: h.Now}.Wrap(ask)
}

// localLoad is this machine's normalized load (tests set h.loadHere).
func (h *Hook) localLoad() float64 {
	if h.loadHere != nil {
		return h.loadHere()
	}
	return placement.LocalLoad()
}

// sizer gives an input's nar size: from the local daemon when it answers (its
// database knows), else by walking the item.
// maxClosure bounds the store items placement weighs for one build (one local query
// each, well under a millisecond).
const maxClosure = 20_000

// inputClosure weighs what the build needs on the machine: its inputs (the .drv, its
// input derivations' outputs and its sources) and everything they refer to, as the
// local daemon records it, since a machine that lacks an input lacks what it refers to
// as well and gets it with it (the references of .drv files are not followed). Without a local daemon (or in tests that give sizes),
// the direct inputs alone.
func (h *Hook) inputClosure(ctx context.Context, paths []string) []placement.Input {
	local := h.localDaemon(ctx)
	if h.Sizes != nil || local == nil {
		return placement.Sized(paths, h.sizer())
	}
	seen := map[string]bool{}
	var out []placement.Input
	queue := append([]string(nil), paths...)
	for len(queue) > 0 && len(out) < maxClosure {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		info, err := h.localInfo(ctx, local, p)
		if err != nil {
			n, _ := storeio.NarSize(p)
			out = append(out, placement.Input{Path: p, Size: max(n, 0)})
			continue
		}
		out = append(out, placement.Input{Path: p, Size: int64(info.NarSize)})
		if strings.HasSuffix(p, ".drv") {
			// A .drv refers to its input derivations, whose outputs are inputs already:
			// following them would weigh the whole build graph.
			continue
		}
		for _, r := range info.References {
			if !seen[r] {
				queue = append(queue, r)
			}
		}
	}
	slices.SortFunc(out, func(a, b placement.Input) int { return cmp.Compare(a.Path, b.Path) })
	return out
}

func (h *Hook) sizer() placement.Sizer {
	if h.Sizes != nil {
		return h.Sizes
	}
	if local := h.localDaemon(context.Background()); local != nil {
		return func(p string) (int64, error) {
			info, err := h.localInfo(context.Background(), local, p)
			if err != nil {
				return storeio.NarSize(p)
			}
			return int64(info.NarSize), nil
		}
	}
	return storeio.NarSize
}

func (h *Hook) params() placement.Params {
	p, err := placement.DefaultParams().WithLocalSpeed(h.Conf.LocalSpeed)
	if err != nil {
		h.note("%v", err)
	}
	return p
}

// learn records what a successful offload of req to m taught: the upload's bytes and
// seconds, the build's seconds, the rest as the offload's overhead (total: since the
// session started). A failure to record is said and changes nothing else.
// learned is what one offload teaches placement, on either path: the upload's
// uncompressed bytes and time, and the build's time from its start on the machine.
type learned struct {
	sentRaw             int64
	peakBytes           int64 // the most memory the build took at most; 0 unknown
	sendTime, buildTime time.Duration
	streams             []placement.Stream // the uploads, by method (bigSourceByAdd)
}

func (h *Hook) learn(m *machines.Machine, req Request, l learned, total time.Duration) {
	if h.dryRun {
		return
	}
	o := placement.Offload{Name: placement.DrvName(req.Drv), Speed: m.Speed, SentBytes: l.sentRaw,
		Send: l.sendTime, Build: l.buildTime, Total: total, PeakBytes: l.peakBytes, Streams: l.streams}
	if err := (placement.Store{Dir: h.Conf.StateDir, Now: h.Now}).Record(m.ID(), o); err != nil {
		h.note("%v", err)
	}
}
