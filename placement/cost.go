package placement

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"offload/machines"
)

// Params are the model's constants.
type Params struct {
	// LocalSpeed is the local machine's speed on the scale of the machines' speed
	// field ($OFFLOAD_LOCAL_SPEED; default 1, as a machine's).
	LocalSpeed float64
	// LocalWeight is what a second of building here counts for against a second of
	// waiting for a machine: the local machine also serves its users and the daemon's
	// other work, and its administrator asked for offloading. Above 1, a build that
	// costs the same either way is offloaded.
	LocalWeight float64
	// DefaultWork is the time of a build never seen, on a machine of speed 1. With the
	// weight, an unknown build with nothing to send goes to a machine, and one whose
	// inputs take more than (LocalWeight-1)·DefaultWork to send stays here.
	DefaultWork time.Duration
	// DefaultThroughput is the bytes per second of a link with no upload learned.
	DefaultThroughput float64
	// DefaultOverhead is the fixed cost of an offload to a machine with none learned.
	DefaultOverhead time.Duration
	// MinMemBytes is the memory a machine must have available to be chosen.
	MinMemBytes int64
}

// LocalSpeedEnv sets Params.LocalSpeed.
const LocalSpeedEnv = "OFFLOAD_LOCAL_SPEED"

// Env, set to "off", makes the hook rank machines by speed and load only, as Guix's
// does (the baseline of the placement benchmark, and a way back).
const Env = "OFFLOAD_PLACEMENT"

// DefaultParams are the constants used when nothing says otherwise.
func DefaultParams() Params {
	return Params{
		LocalSpeed:        1,
		LocalWeight:       1.5,
		DefaultWork:       20 * time.Second,
		DefaultThroughput: 10 << 20,
		DefaultOverhead:   time.Second,
		MinMemBytes:       256 << 20,
	}
}

// WithLocalSpeed is p with LocalSpeed from v, the value of $OFFLOAD_LOCAL_SPEED ("":
// unchanged); a value that is not a positive number is an error, and p stays as it is.
func (p Params) WithLocalSpeed(v string) (Params, error) {
	if v == "" {
		return p, nil
	}
	s, err := strconv.ParseFloat(v, 64)
	if err != nil || s <= 0 || math.IsInf(s, 0) || s != s {
		return p, fmt.Errorf("%s=%q: not a positive number; using %g", LocalSpeedEnv, v, p.LocalSpeed)
	}
	p.LocalSpeed = s
	return p, nil
}

// Job is the build to place.
type Job struct {
	Name   string // DrvName
	Inputs []Input
}

// Option is a machine that could take the job.
type Option struct {
	M      *machines.Machine
	Probe  *machines.Probe // nil: not probed (no load, memory unknown)
	Queued bool            // every build slot is taken: the build would wait for one
	// Valid are the inputs the machine holds; nil when it was not asked (it then
	// counts as lacking them all).
	Valid map[string]bool
}

// Estimate is one candidate's expected cost. Its terms are the seconds the build
// would take there; Total sums them, with the local weight for the local machine.
type Estimate struct {
	M         *machines.Machine // nil: the local machine
	SendBytes int64             // what it lacks, uncompressed
	SendItems int
	Asked     bool // SendBytes comes from asking the machine (else: it lacks everything)
	Send      time.Duration
	Build     time.Duration
	Learned   bool // Build comes from learned times of this derivation name
	Wait      time.Duration
	Overhead  time.Duration
	Weight    float64 // 1 for machines, Params.LocalWeight here
	// Skip says why the candidate may not take the job (memory); "" when it may.
	Skip string
}

// Local tells whether the estimate is the local machine's.
func (e Estimate) Local() bool { return e.M == nil }

// Total is the estimate's cost.
func (e Estimate) Total() time.Duration {
	return time.Duration(float64(e.Send+e.Build+e.Wait+e.Overhead) * max(e.Weight, 1))
}

// Name is "local" or 'NAME:PORT' as messages name a machine.
func (e Estimate) Name() string {
	if e.Local() {
		return "local"
	}
	return "'" + e.M.Display() + "'"
}

// String is the estimate in one line, each term in seconds, e.g.
// "'m:22' 13.2 s: send 150.0 MiB 12.0 s, build 0.2 s (learned), wait 0.0 s, overhead 1.0 s".
func (e Estimate) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Name(), secs(e.Total()))
	if e.Local() {
		fmt.Fprintf(&b, ": build %s%s, weighted ×%g", secs(e.Build), learned(e.Learned), e.Weight)
	} else {
		asked := ""
		if !e.Asked {
			asked = " (not asked: all of them)"
		}
		fmt.Fprintf(&b, ": send %.1f MiB %s%s, build %s%s, wait %s, overhead %s",
			float64(e.SendBytes)/(1<<20), secs(e.Send), asked, secs(e.Build), learned(e.Learned), secs(e.Wait), secs(e.Overhead))
	}
	if e.Skip != "" {
		b.WriteString("; skipped: " + e.Skip)
	}
	return b.String()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func learned(ok bool) string {
	if ok {
		return " (learned)"
	}
	return ""
}

// Model estimates costs from Params and what was learned of each machine.
type Model struct {
	Params
	Learned map[string]History // by Machine.ID; a machine absent has learned nothing
	// LocalLoad is the local machine's normalized load (LocalLoad), which slows a
	// local build as a machine's load slows its builds.
	LocalLoad float64
}

// Remote estimates the job on o.
func (md Model) Remote(job Job, o Option) Estimate {
	m := o.M
	h := md.Learned[m.ID()]
	e := Estimate{M: m, Weight: 1, Asked: o.Valid != nil}
	e.SendBytes, e.SendItems = Lacking(job.Inputs, o.Valid)
	tp := h.Throughput()
	if tp <= 0 {
		tp = md.DefaultThroughput
	}
	e.Send = seconds(float64(e.SendBytes) / max(tp, 1))
	speed := speedOf(m.Speed)
	if o.Probe != nil {
		speed /= 1 + o.Probe.NormalizedLoad()
	}
	work, ok := md.work(job.Name, m.ID())
	e.Build, e.Learned = seconds(work.Seconds()/speed), ok
	if o.Queued {
		// One of our builds holds each slot: at worst a whole build ahead.
		e.Wait = e.Build
	}
	if over, ok := h.Overhead(); ok {
		e.Overhead = over
	} else {
		e.Overhead = md.DefaultOverhead
	}
	if o.Probe != nil && o.Probe.MemAvailable > 0 {
		mem := o.Probe.MemAvailable
		peak := md.peak(job.Name)
		switch {
		case mem < md.MinMemBytes:
			e.Skip = fmt.Sprintf("%d MiB of memory available, below the floor of %d MiB", mem>>20, md.MinMemBytes>>20)
		case peak > 0 && mem < peak:
			e.Skip = fmt.Sprintf("%d MiB of memory available, below the %d MiB that %s was seen to take", mem>>20, peak>>20, job.Name)
		}
	}
	return e
}

// Local estimates the job here: its build alone, at the local speed and load, weighted.
func (md Model) Local(job Job) Estimate {
	work, ok := md.work(job.Name, "")
	speed := speedOf(md.LocalSpeed) / (1 + min(max(md.LocalLoad, 0), 1))
	return Estimate{Build: seconds(work.Seconds() / speed), Learned: ok, Weight: max(md.LocalWeight, 1)}
}

// work is the expected time of the job on a machine of speed 1: the median of what was
// learned on machine id, else on every machine, else DefaultWork.
func (md Model) work(name, id string) (time.Duration, bool) {
	if b := md.Learned[id].Builds[name]; name != "" && b != nil && len(b.Work) > 0 {
		return seconds(median(b.Work)), true
	}
	var all []float64
	for _, h := range md.Learned {
		if b := h.Builds[name]; name != "" && b != nil {
			all = append(all, b.Work...)
		}
	}
	if len(all) > 0 {
		return seconds(median(all)), true
	}
	return md.DefaultWork, false
}

// peak is the most memory a build of name was seen to take anywhere (0 unknown).
func (md Model) peak(name string) int64 {
	var p int64
	for _, h := range md.Learned {
		if b := h.Builds[name]; b != nil {
			p = max(p, b.PeakBytes)
		}
	}
	return p
}

// Cheapest returns the index of the cheapest estimate that is not skipped (-1: none).
// Ties go to the earlier one: the caller puts the machines first, in the order of its
// ranking, and the local machine last, so that it must be strictly cheaper.
func Cheapest(es []Estimate) int {
	best := -1
	for i, e := range es {
		if e.Skip == "" && (best < 0 || e.Total() < es[best].Total()) {
			best = i
		}
	}
	return best
}

// Seconds is d as the estimates write it: "1.5 s".
func Seconds(d time.Duration) string { return secs(d) }

// LocalLoad reads the local machine's 1-minute load per core, as a probe reads a
// machine's (machines.Probe.NormalizedLoad); 0 when it cannot be read.
func LocalLoad() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	return parseLoad(string(b), runtime.NumCPU())
}

func parseLoad(loadavg string, cores int) float64 {
	f := strings.Fields(loadavg)
	if len(f) == 0 {
		return 0
	}
	l, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return machines.Probe{Load1: l, Cores: cores}.NormalizedLoad()
}
