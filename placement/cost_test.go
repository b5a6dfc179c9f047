package placement

import (
	"strings"
	"testing"
	"time"

	"offload/machines"
)

const mib = 1 << 20

func machine(name string, speed float64) *machines.Machine {
	return &machines.Machine{Name: name, Port: 22, Speed: speed, ParallelBuilds: 1}
}

func idle() *machines.Probe { return &machines.Probe{Load1: 0, Cores: 4, FreeBytes: 1 << 40} }

// job is a build of name with one input of size bytes per path.
func job(name string, sizes map[string]int64) Job {
	j := Job{Name: name}
	for p, n := range sizes {
		j.Inputs = append(j.Inputs, Input{Path: p, Size: n})
	}
	return j
}

// learnedBuild is a history with n builds of name taking secs on a machine of speed.
func learnedBuild(name string, secs float64, speed float64) History {
	var h History
	for range 3 {
		h.add(Offload{Name: name, Speed: speed, Build: seconds(secs)}, time.Unix(1e9, 0))
	}
	return h
}

func TestDefaultLeansTowardsOffloadWithNothingToSend(t *testing.T) {
	md := Model{Params: DefaultParams()}
	m := machine("a", 1)
	j := job("hello", map[string]int64{"/gnu/store/x-in": 10 << 10})
	es := []Estimate{md.Remote(j, Option{M: m, Probe: idle(), Valid: map[string]bool{"/gnu/store/x-in": true}}), md.Local(j)}
	if got := Cheapest(es); got != 0 {
		t.Fatalf("cheapest %d, want the machine: %v", got, es)
	}
	if es[0].SendBytes != 0 || es[0].Learned || es[1].Learned {
		t.Errorf("estimates %v: want nothing to send and no learned time", es)
	}
}

func TestDefaultLeansTowardsLocalForBigInputs(t *testing.T) {
	md := Model{Params: DefaultParams()}
	j := job("hello", map[string]int64{"/gnu/store/x-big": 400 * mib})
	es := []Estimate{md.Remote(j, Option{M: machine("a", 1), Probe: idle()}), md.Local(j)}
	if got := Cheapest(es); got != 1 {
		t.Fatalf("cheapest %d, want local: %v", got, es)
	}
}

// The case: a build of a fraction of a second whose 157 MB input the machine
// lacks goes nowhere; here it costs a fraction of a second.
func TestShortBuildBigInputStaysLocal(t *testing.T) {
	md := Model{Params: DefaultParams(), Learned: map[string]History{"a:22": learnedBuild("tiny", 0.3, 1)}}
	j := job("tiny", map[string]int64{"/gnu/store/x-big": 157e6})
	es := []Estimate{md.Remote(j, Option{M: machine("a", 1), Probe: idle(), Valid: map[string]bool{}}), md.Local(j)}
	if Cheapest(es) != 1 {
		t.Fatalf("want local: %v", es)
	}
	if !es[1].Learned || es[1].Build != seconds(0.3) {
		t.Errorf("local estimate %v: want the learned 0.3 s", es[1])
	}
	if es[0].Send < 10*time.Second {
		t.Errorf("sending 157 MB at the default throughput: %v", es[0])
	}
}

func TestMachineHoldingTheInputsWins(t *testing.T) {
	md := Model{Params: DefaultParams()}
	in := map[string]int64{"/gnu/store/a-big": 300 * mib, "/gnu/store/b-small": mib}
	j := job("x", in)
	lacks := md.Remote(j, Option{M: machine("lacks", 2), Probe: idle(), Valid: map[string]bool{}})
	holds := md.Remote(j, Option{M: machine("holds", 1), Probe: idle(), Valid: map[string]bool{"/gnu/store/a-big": true}})
	if got := Cheapest([]Estimate{lacks, holds}); got != 1 {
		t.Fatalf("the faster machine that lacks 300 MiB won over the one that holds them: %v / %v", lacks, holds)
	}
	if holds.SendBytes != mib || holds.SendItems != 1 || !holds.Asked {
		t.Errorf("holds: %v, want 1 item of 1 MiB to send, asked", holds)
	}
}

func TestLearnedTimesChangeTheChoice(t *testing.T) {
	j := job("gcc", nil)
	a, b := machine("a", 1), machine("b", 1)
	opts := func(md Model) []Estimate {
		return []Estimate{md.Remote(j, Option{M: a, Probe: idle()}), md.Remote(j, Option{M: b, Probe: idle()})}
	}
	md := Model{Params: DefaultParams()}
	if got := Cheapest(opts(md)); got != 0 {
		t.Fatalf("with nothing learned the ranking's first must win ties: %d", got)
	}
	// gcc took 600 s on a and 60 s on b (same speed field): b is the place for it.
	md.Learned = map[string]History{"a:22": learnedBuild("gcc", 600, 1), "b:22": learnedBuild("gcc", 60, 1)}
	es := opts(md)
	if got := Cheapest(es); got != 1 {
		t.Fatalf("cheapest %d, want b: %v", got, es)
	}
	// A machine with no history of gcc borrows the others' (converted by speed).
	c := machine("c", 4)
	e := md.Remote(j, Option{M: c, Probe: idle()})
	if !e.Learned || e.Build <= 0 || e.Build > seconds(600/4.0) {
		t.Errorf("c: %v, want a learned time from a and b at speed 4", e)
	}
}

func TestLoadAndQueueCost(t *testing.T) {
	md := Model{Params: DefaultParams()}
	j := job("x", nil)
	m := machine("a", 1)
	free := md.Remote(j, Option{M: m, Probe: idle()})
	loaded := md.Remote(j, Option{M: m, Probe: &machines.Probe{Load1: 4, Cores: 4}})
	queued := md.Remote(j, Option{M: m, Probe: idle(), Queued: true})
	if loaded.Build != 2*free.Build {
		t.Errorf("a fully loaded machine builds at half speed: %v vs %v", loaded, free)
	}
	if queued.Wait != queued.Build || free.Wait != 0 {
		t.Errorf("queued %v, free %v: a queued build waits a build", queued, free)
	}
}

func TestMemory(t *testing.T) {
	md := Model{Params: DefaultParams()}
	j := job("big", nil)
	low := &machines.Probe{Cores: 4, MemAvailable: 100 * mib}
	if e := md.Remote(j, Option{M: machine("a", 1), Probe: low}); !strings.Contains(e.Skip, "floor") {
		t.Errorf("100 MiB available: %v, want skipped below the floor", e)
	}
	unknown := &machines.Probe{Cores: 4}
	if e := md.Remote(j, Option{M: machine("a", 1), Probe: unknown}); e.Skip != "" {
		t.Errorf("memory unknown: %v, want not skipped", e)
	}
	h := learnedBuild("big", 10, 1)
	h.add(Offload{Name: "big", Speed: 1, Build: time.Second, PeakBytes: 2 << 30}, time.Unix(1e9, 0))
	md.Learned = map[string]History{"b:22": h}
	some := &machines.Probe{Cores: 4, MemAvailable: 1 << 30}
	es := []Estimate{md.Remote(j, Option{M: machine("a", 1), Probe: some}), md.Remote(j, Option{M: machine("c", 1), Probe: &machines.Probe{Cores: 4, MemAvailable: 4 << 30}})}
	if !strings.Contains(es[0].Skip, "2048 MiB that big") || Cheapest(es) != 1 {
		t.Errorf("estimates %v: want a skipped for the learned peak, c chosen", es)
	}
	if Cheapest([]Estimate{es[0]}) != -1 {
		t.Error("a skipped estimate was chosen")
	}
}

func TestLocalTiesGoToTheMachine(t *testing.T) {
	p := DefaultParams()
	p.LocalWeight, p.DefaultOverhead = 1, 0
	md := Model{Params: p}
	j := job("x", nil)
	es := []Estimate{md.Remote(j, Option{M: machine("a", 1)}), md.Local(j)}
	if es[0].Total() != es[1].Total() || Cheapest(es) != 0 {
		t.Errorf("equal costs %v: want the machine", es)
	}
}

func TestLocalSpeed(t *testing.T) {
	p, err := DefaultParams().WithLocalSpeed("4")
	if err != nil || p.LocalSpeed != 4 {
		t.Fatalf("%v %v", p.LocalSpeed, err)
	}
	if e := (Model{Params: p}).Local(job("x", nil)); e.Build != p.DefaultWork/4 {
		t.Errorf("local estimate at speed 4: %v", e)
	}
	for _, bad := range []string{"0", "-1", "fast", "NaN", "Inf"} {
		if p, err := DefaultParams().WithLocalSpeed(bad); err == nil || p.LocalSpeed != 1 || !strings.Contains(err.Error(), LocalSpeedEnv) {
			t.Errorf("%q: speed %v, error %v", bad, p.LocalSpeed, err)
		}
	}
}

func TestEstimateString(t *testing.T) {
	md := Model{Params: DefaultParams()}
	j := job("x", map[string]int64{"/gnu/store/x-in": 10 * mib})
	e := md.Remote(j, Option{M: machine("a", 1), Probe: idle()})
	want := "'a:22' 22.0 s: send 10.0 MiB 1.0 s (not asked: all of them), build 20.0 s, wait 0.0 s, overhead 1.0 s"
	if e.String() != want {
		t.Errorf("got  %s\nwant %s", e, want)
	}
	if l := md.Local(j).String(); l != "local 30.0 s: build 20.0 s, weighted ×1.5" {
		t.Errorf("local: %s", l)
	}
}

func TestLocalLoad(t *testing.T) {
	md := Model{Params: DefaultParams()}
	idleHere := md.Local(job("x", nil))
	md.LocalLoad = parseLoad("4.00 3.00 2.00 5/300 1234\n", 4)
	if md.LocalLoad != 1 {
		t.Fatalf("load 4 on 4 cores: %v", md.LocalLoad)
	}
	if busy := md.Local(job("x", nil)); busy.Build != 2*idleHere.Build {
		t.Errorf("a fully loaded local machine builds at half speed: %v vs %v", busy, idleHere)
	}
	for _, bad := range []string{"", "x 1 2"} {
		if l := parseLoad(bad, 4); l != 0 {
			t.Errorf("%q: %v", bad, l)
		}
	}
	if l := LocalLoad(); l < 0 || l > 1 {
		t.Errorf("this machine's load %v", l)
	}
}
