package machines

import (
	"cmp"
	"fmt"
	"math/rand"
	"slices"
	"time"
)

// MinFreeBytes is the free space a machine's store needs to be chosen, as
// in Guix: below it a build would likely fail for lack of space.
const MinFreeBytes = 100 << 20

// Probe is what one quick look at a machine found.
type Probe struct {
	Load1     float64   // 1-minute load average
	Cores     int       // number of cores
	FreeBytes int64     // free space in the machine's store; -1 unknown
	Time      time.Time // when probed
	// RemoteSlotsHeld is how many of the machine's own build slots (shared by every
	// host that offloads to it) are taken, by any host; -1 unknown. A probe cached
	// before the field existed reads 0: not full, as unknown.
	RemoteSlotsHeld int `json:",omitempty"`
	// MemAvailable is the memory the machine has available, in bytes; 0 unknown (a
	// machine without /proc/meminfo, or a probe cached before the field existed).
	MemAvailable int64 `json:",omitempty"`
}

// RemoteFull tells whether every one of the machine's own build slots was taken, for
// a machine of parallel-builds slots.
func (p Probe) RemoteFull(slots int) bool {
	return p.RemoteSlotsHeld >= 0 && p.RemoteSlotsHeld >= max(slots, 1)
}

// NormalizedLoad returns the 1-minute load per core, capped at 1.0; fewer
// than one core counts as one.
func (p Probe) NormalizedLoad() float64 {
	cores := max(p.Cores, 1)
	l := p.Load1 / float64(cores)
	if l != l || l < 0 { // NaN or a nonsense negative load
		return 1
	}
	return min(l, 1.0)
}

// Candidate is a matching machine with a free slot and the result of
// probing it.
type Candidate struct {
	M     *Machine
	Probe *Probe // nil when the probe failed
	Err   error  // why the probe failed
	// Queued: every local slot is taken and the build would wait for one of ours
	// to end, which frees the machine's slot it holds too: the machine's own slots
	// do not make it busy.
	Queued bool
}

// Verdict says whether a candidate may be used and why, in one line fit
// for stderr.
type Verdict struct {
	M      *Machine
	Usable bool
	Reason string
	Score  float64
}

// Rank judges the candidates: it drops the unreachable (no probe), the full
// (every one of the machine's own build slots taken, by any host; unless the
// candidate is queued), those with less than MinFreeBytes free in the store,
// and the overloaded (normalized load at or above the machine's
// overload-threshold, unless that is #f). Usable ones score Speed/(1+NormalizedLoad) and come first,
// best first, with ties put in random order by rnd so that equal machines
// share the work (rnd nil: input order); the others follow in input order.
func Rank(c []Candidate, rnd *rand.Rand) []Verdict {
	var usable, rest []Verdict
	for _, cand := range c {
		v := judge(cand)
		if v.Usable {
			usable = append(usable, v)
		} else {
			rest = append(rest, v)
		}
	}
	if rnd != nil {
		rnd.Shuffle(len(usable), func(i, j int) { usable[i], usable[j] = usable[j], usable[i] })
	}
	slices.SortStableFunc(usable, func(a, b Verdict) int { return cmp.Compare(b.Score, a.Score) })
	return append(usable, rest...)
}

func judge(c Candidate) Verdict {
	m, p := c.M, c.Probe
	v := Verdict{M: m}
	name := m.Display()
	switch {
	case p == nil:
		switch {
		case c.Err == nil:
			v.Reason = fmt.Sprintf("machine '%s' is unreachable: no load probe", name)
		default:
			v.Reason = fmt.Sprintf("machine '%s' is unreachable: %v", name, c.Err)
		}
	case !c.Queued && p.RemoteFull(m.ParallelBuilds):
		v.Reason = fmt.Sprintf("machine '%s' is full: %d of %d build slots taken on the machine, by other hosts too",
			name, p.RemoteSlotsHeld, max(m.ParallelBuilds, 1))
	case p.FreeBytes >= 0 && p.FreeBytes < MinFreeBytes:
		v.Reason = fmt.Sprintf("machine '%s' is low on disk space (%d MiB free in the store, need %d MiB)",
			name, p.FreeBytes>>20, MinFreeBytes>>20)
	case m.OverloadThreshold != nil && p.NormalizedLoad() >= *m.OverloadThreshold:
		v.Reason = fmt.Sprintf("machine '%s' is overloaded (normalized load %.2f >= %.2f)",
			name, p.NormalizedLoad(), *m.OverloadThreshold)
	default:
		v.Usable = true
		v.Score = m.Speed / (1 + p.NormalizedLoad())
		v.Reason = fmt.Sprintf("machine '%s' is available (score %.3f: speed %g, normalized load %.2f)",
			name, v.Score, m.Speed, p.NormalizedLoad())
	}
	return v
}
