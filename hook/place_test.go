package hook

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"offload/machines"
	"offload/placement"
	"offload/storeio"
)

// The hook's side of placement (place.go), with a Holdings and a Sizer of the test's
// own: which machine each request goes to, and when it stays here.

type placeFixture struct {
	h     *Hook
	out   *bytes.Buffer
	drv   string // a .drv whose one source is big
	big   string
	asked map[string]int // Holdings questions per machine
	holds map[string]map[string]bool
	now   time.Time
}

func newPlaceFixture(t *testing.T) *placeFixture {
	t.Helper()
	dir := t.TempDir()
	f := &placeFixture{out: &bytes.Buffer{}, asked: map[string]int{}, holds: map[string]map[string]bool{},
		now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		big: "/gnu/store/a37x84zbqzs261xph9j4zdlbm7mmnix1-big"}
	d := &storeio.Derivation{Outputs: []storeio.Output{{Name: "out", Path: "/gnu/store/b37x84zbqzs261xph9j4zdlbm7mmnix1-t-short-1.0"}},
		InputSrcs: []string{f.big}, System: "x86_64-linux", Builder: "/bin/sh"}
	f.drv = filepath.Join(dir, "x37x84zbqzs261xph9j4zdlbm7mmnix1-t-short-1.0.drv")
	if err := os.WriteFile(f.drv, d.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	f.h = &Hook{Conf: Config{StateDir: filepath.Join(dir, "state")}, Out: f.out, Now: func() time.Time { return f.now },
		Sizes: func(p string) (int64, error) {
			if p == f.big {
				return 200 << 20, nil
			}
			return 1000, nil
		},
		Holdings: func(ctx context.Context, m *machines.Machine, paths []string) (map[string]bool, error) {
			f.asked[m.ID()]++
			valid := map[string]bool{}
			for _, p := range paths {
				valid[p] = f.holds[m.ID()][p]
			}
			return valid, nil
		},
		loadHere: func() float64 { return 0 }} // as idle as the machines' probes
	f.h.init()
	return f
}

// usable is one usable verdict and its candidate per machine, idle, in this order.
func usable(ms ...*machines.Machine) ([]machines.Verdict, []*candidate) {
	var vs []machines.Verdict
	var cs []*candidate
	for _, m := range ms {
		vs = append(vs, machines.Verdict{M: m, Usable: true, Reason: "available"})
		cs = append(cs, &candidate{m: m, probe: &machines.Probe{Cores: 4, FreeBytes: 1 << 40, MemAvailable: 8 << 30}})
	}
	return vs, cs
}

func (f *placeFixture) learnShort(t *testing.T, m *machines.Machine) {
	t.Helper()
	o := placement.Offload{Name: "t-short", Speed: 1, Build: 300 * time.Millisecond, Total: time.Second}
	if err := (placement.Store{Dir: f.h.Conf.StateDir}).Record(m.ID(), o); err != nil {
		t.Fatal(err)
	}
}

func TestPlaceDeclinesWhenLocalIsCheapest(t *testing.T) {
	f := newPlaceFixture(t)
	m := &machines.Machine{Name: "a", Port: 22, Speed: 1, ParallelBuilds: 1}
	f.learnShort(t, m)
	vs, cs := usable(m)
	if _, local := f.h.place(context.Background(), Request{WantsLocal: true, Drv: f.drv}, vs, cs); !local {
		t.Fatalf("a 0.3 s build with 200 MiB to send went to the machine:\n%s", f.out)
	}
	if !strings.Contains(f.out.String(), "offload: building locally: local ") || f.asked["a:22"] != 1 {
		t.Errorf("messages %q, questions %v", f.out, f.asked)
	}
	// Without a free local slot the daemon cannot build it: the machine takes it.
	f.out.Reset()
	out, local := f.h.place(context.Background(), Request{Drv: f.drv}, vs, cs)
	if local || len(out) != 1 || !out[0].Usable {
		t.Errorf("WANTS-LOCAL 0: local %v, verdicts %+v", local, out)
	}
	// OFFLOAD_FALLBACK=wait never builds here either.
	f.h.Conf.Fallback = "wait"
	if _, local := f.h.place(context.Background(), Request{WantsLocal: true, Drv: f.drv}, vs, cs); local {
		t.Error("OFFLOAD_FALLBACK=wait, yet local")
	}
}

func TestPlacePrefersTheMachineHoldingTheInputs(t *testing.T) {
	f := newPlaceFixture(t)
	a := &machines.Machine{Name: "a", Port: 22, Speed: 2, ParallelBuilds: 1}
	b := &machines.Machine{Name: "b", Port: 22, Speed: 1, ParallelBuilds: 1}
	f.holds["b:22"] = map[string]bool{f.big: true}
	vs, cs := usable(a, b)
	out, local := f.h.place(context.Background(), Request{Drv: f.drv}, vs, cs)
	if local || out[0].M != b || out[1].M != a {
		t.Fatalf("order %s, %s (local %v): want b, which holds the 200 MiB, first\n%s", out[0].M.ID(), out[1].M.ID(), local, f.out)
	}
	if !strings.Contains(f.out.String(), "offload: cheapest: 'b:22' ") {
		t.Errorf("messages %q", f.out)
	}
	// Asked again within a few seconds: the answers come from the state directory.
	f.now = f.now.Add(2 * time.Second)
	f.h.place(context.Background(), Request{Drv: f.drv}, vs, cs)
	if f.asked["a:22"] != 1 || f.asked["b:22"] != 1 {
		t.Errorf("questions %v: want one per machine within the cache's life", f.asked)
	}
	f.now = f.now.Add(time.Minute)
	f.h.place(context.Background(), Request{Drv: f.drv}, vs, cs)
	if f.asked["a:22"] != 2 {
		t.Errorf("questions %v: want a new one once the cache expired", f.asked)
	}
}

func TestPlaceWithoutChoiceAsksNothing(t *testing.T) {
	f := newPlaceFixture(t)
	a := &machines.Machine{Name: "a", Port: 22, Speed: 1, ParallelBuilds: 1}
	vs, cs := usable(a)
	if out, local := f.h.place(context.Background(), Request{Drv: f.drv}, vs, cs); local || len(out) != 1 || f.out.Len() != 0 || len(f.asked) != 0 {
		t.Errorf("one machine, no local slot: local %v, %d verdicts, messages %q, questions %v", local, len(out), f.out, f.asked)
	}
	// OFFLOAD_PLACEMENT=off: the ranking's order, no question, never local.
	f.h.Conf.Placement = "off"
	b := &machines.Machine{Name: "b", Port: 22, Speed: 1, ParallelBuilds: 1}
	f.holds["b:22"] = map[string]bool{f.big: true}
	vs, cs = usable(a, b)
	out, local := f.h.place(context.Background(), Request{WantsLocal: true, Drv: f.drv}, vs, cs)
	if local || out[0].M != a || len(f.asked) != 0 {
		t.Errorf("placement off: local %v, first %s, questions %v", local, out[0].M.ID(), f.asked)
	}
}

func TestPlaceSkipsMachineShortOfMemory(t *testing.T) {
	f := newPlaceFixture(t)
	a := &machines.Machine{Name: "a", Port: 22, Speed: 1, ParallelBuilds: 1}
	b := &machines.Machine{Name: "b", Port: 22, Speed: 1, ParallelBuilds: 1}
	vs, cs := usable(a, b)
	cs[0].probe.MemAvailable = 50 << 20
	out, _ := f.h.place(context.Background(), Request{Drv: f.drv}, vs, cs)
	if out[0].M != b || !out[0].Usable || out[1].Usable || !strings.Contains(out[1].Reason, "machine 'a:22' is skipped: 50 MiB of memory available") {
		t.Errorf("verdicts %+v", out)
	}
}

// An offload that succeeds teaches its build time and overhead; one that fails
// teaches nothing.
func TestOffloadSessionLearns(t *testing.T) {
	f := newSessionFixture(t)
	f.fail(t, "build")
	if err := f.run(); err == nil {
		t.Fatal("the build did not fail")
	}
	store := placement.Store{Dir: f.h.Conf.StateDir}
	if h, err := store.Load(f.m.ID()); err != nil || len(h.Builds) != 0 || len(h.Overheads) != 0 {
		t.Fatalf("learned from a failed build: %+v %v", h, err)
	}
	f.fail(t, "")
	if err := f.run(); err != nil {
		t.Fatalf("offload: %v\n%s", err, f.out.String())
	}
	h, err := store.Load(f.m.ID())
	if err != nil || h.Builds["t"] == nil || len(h.Builds["t"].Work) != 1 || len(h.Overheads) != 1 {
		t.Fatalf("learned %+v %v: want one build of t and one overhead", h, err)
	}
	if len(h.Transfers) != 0 {
		t.Errorf("a few bytes' upload counted towards the link's throughput: %+v", h.Transfers)
	}
}

// A drained machine gets no build; with every machine drained, the build stays here
// when the daemon can build it, else waits.
func TestDecideSkipsDrainedMachines(t *testing.T) {
	f := newSessionFixture(t)
	// build1 is the faster: without the drain, it would get every build.
	f.h.Conf.MachinesFile = fakeMachines(t, map[string]string{"build1": "2.0", "build2": "1.0"})
	if err := placement.Drain(f.h.Conf.StateDir, "build1:2222", "", time.Now()); err != nil {
		t.Fatal(err)
	}
	req := Request{System: "x86_64-linux", Drv: f.drv}
	for range 3 {
		d := f.h.decide(context.Background(), req)
		d.release()
		if d.answer != "accept" || d.machine.ID() != "build2:2222" {
			t.Fatalf("answer %s on %v:\n%s", d.answer, d.machine, f.out.String())
		}
	}
	if !strings.Contains(f.out.String(), "offload: machine 'build1:2222' is drained since ") {
		t.Errorf("no line saying why:\n%s", f.out.String())
	}
	if err := placement.Drain(f.h.Conf.StateDir, "build2:2222", "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if d := f.h.decide(context.Background(), req); d.answer != "postpone" {
		t.Errorf("every machine drained, no local slot: %s", d.answer)
	}
	req.WantsLocal = true
	if d := f.h.decide(context.Background(), req); d.answer != "decline" {
		t.Errorf("every machine drained, a local slot: %s", d.answer)
	}
}

// fakeMachines writes a machines file of machines NAME:2222 of the given speeds, all
// reached through the session fixture's fake ssh.
func fakeMachines(t *testing.T, speeds map[string]string) string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "key")
	os.WriteFile(key, []byte("not a key: the fake ssh reads none"), 0o600)
	file := filepath.Join(t.TempDir(), "machines.scm")
	var text string
	for name, speed := range speeds {
		text += `(build-machine (name "` + name + `") (port 2222) (user "u") (private-key "` + key + `") (systems '("x86_64-linux")) (overload-threshold #f) (speed ` + speed + `))`
	}
	if err := os.WriteFile(file, []byte("(list "+text+")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// A dry run (offload explain) shows each candidate's estimate, the local machine's
// included, and the cheapest, even with one machine.
func TestDryRunShowsEstimates(t *testing.T) {
	f := newSessionFixture(t)
	f.h.Conf.MachinesFile = fakeMachines(t, map[string]string{"build1": "1.0"})
	d := &storeio.Derivation{Outputs: []storeio.Output{{Name: "out", Path: f.output}}, InputSrcs: []string{f.input},
		System: "x86_64-linux", Builder: "/bin/sh"}
	if err := os.WriteFile(f.drv, d.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	v := f.h.DecideDryRun(context.Background(), Request{WantsLocal: true, System: "x86_64-linux", Drv: f.drv}, &w)
	out := w.String()
	for _, want := range []string{`inputs: 2 items, 0.0 MiB; derivation name "t"`, "estimate: 'build1:2222' ", "estimate: local ", "cheapest: 'build1:2222'"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if v.Answer != "accept" || v.Local {
		t.Errorf("verdict %+v", v)
	}
	// Without a .drv: no inputs, a build never seen.
	w.Reset()
	f.h.DecideDryRun(context.Background(), Request{System: "x86_64-linux", Drv: "(explain)"}, &w)
	if !strings.Contains(w.String(), "inputs: unknown (no .drv given)") {
		t.Errorf("without a .drv:\n%s", w.String())
	}
}

// With one machine and no local slot there is nothing to compare, but a machine short
// of memory is still skipped.
func TestPlaceOneMachineShortOfMemory(t *testing.T) {
	f := newPlaceFixture(t)
	a := &machines.Machine{Name: "a", Port: 22, Speed: 1, ParallelBuilds: 1}
	vs, cs := usable(a)
	cs[0].probe.MemAvailable = 50 << 20
	out, local := f.h.place(context.Background(), Request{Drv: f.drv}, vs, cs)
	if local || len(out) != 1 || out[0].Usable || len(f.asked) != 0 {
		t.Errorf("local %v, verdicts %+v, questions %v", local, out, f.asked)
	}
}

// A build that would wait in a busy machine's queue for a whole build costs more than
// building here, when the daemon has a free slot.
func TestPlaceQueuedLosesToLocal(t *testing.T) {
	f := newPlaceFixture(t)
	a := &machines.Machine{Name: "a", Port: 22, Speed: 1, ParallelBuilds: 1}
	vs, cs := usable(a)
	cs[0].queued = true
	f.holds["a:22"] = map[string]bool{f.big: true, f.drv: true}
	if _, local := f.h.place(context.Background(), Request{WantsLocal: true, Drv: f.drv}, vs, cs); !local {
		t.Errorf("queued behind a build, yet not local:\n%s", f.out)
	}
	cs[0].queued = false
	if _, local := f.h.place(context.Background(), Request{WantsLocal: true, Drv: f.drv}, vs, cs); local {
		t.Errorf("a free machine holding everything lost to local:\n%s", f.out)
	}
}
