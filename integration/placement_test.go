package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"offload/integration/drv"
	"offload/integration/farm"
	"offload/placement"
)

// Placement (docs/hook.md, "Choosing a machine"): the cost of each machine counts what
// must be sent, where the inputs already are and what was learned of the build; the
// local machine is a candidate when the daemon can build (WANTS-LOCAL 1).

// inputDrv is a short build that needs the given inputs (their presence is checked).
func inputDrv(f *farm.Farm, name, nonce string, inputs ...string) *drv.Derivation {
	return f.MakeDrv(drv.Spec{
		Name:      name,
		Args:      []string{"-c", `for i in $INPUTS; do test -e "$i" || exit 1; done; echo "hello $NONCE" > "$out"`},
		Env:       map[string]string{"NONCE": nonce, "INPUTS": strings.Join(inputs, " ")},
		InputSrcs: inputs,
		Nonce:     nonce,
	})
}

// builtOn tells whether the offload r built on m (its "@ build-remote" line, on
// either path).
func builtOn(r result, m *farm.Machine) bool {
	for _, l := range strings.Split(r.messages, "\n") {
		if strings.HasPrefix(l, "@ build-remote ") && strings.HasSuffix(l, " "+machineName(m)) {
			return true
		}
	}
	return false
}

// TestPlacementPrefersTheMachineHoldingTheInputs: two machines of the same speed, one
// holding the big input (64 MiB), the other only the small one: the build goes to the
// first, whatever the random order of equal machines, and nothing big is sent.
func TestPlacementPrefersTheMachineHoldingTheInputs(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	writeMachines(f, nil)
	a, b := f.Machines[0], f.Machines[1]
	big := addRandomItem(t, f, "big-input", 1, 0, 64<<20)
	small := addRandomItem(t, f, "small-input", 2, 0, 2<<20)
	if err := f.CopyToMachine(b, big); err != nil {
		t.Fatal(err)
	}
	if err := f.CopyToMachine(a, small); err != nil {
		t.Fatal(err)
	}
	for i, nonce := range []string{"hold1", "hold2", "hold3"} {
		d := inputDrv(f, "t-hold", nonce, big, small)
		r := offload(t, f, d, buildOpts{})
		assertBuilt(t, d, nonce, r)
		if builtOn(r, a) || !builtOn(r, b) {
			t.Fatalf("build %d went to the machine lacking the big input:\n%s", i, r.messages)
		}
		if !strings.Contains(r.messages, "cheapest: '"+b.Name+":"+itoa(b.Port)+"'") {
			t.Errorf("no line saying why:\n%s", r.messages)
		}
	}
}

// TestPlacementDeclinesShortBuildWithBigInputs: once a build is known to be short, a
// build of it whose 64 MiB input the machine lacks stays here when the daemon has a
// free slot (WANTS-LOCAL 1); without one it still goes to the machine.
func TestPlacementDeclinesShortBuildWithBigInputs(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	small := addRandomItem(t, f, "small-input", 6, 0, 4<<10)
	d := inputDrv(f, "t-quick", "learn", small)
	assertBuilt(t, d, "learn", offload(t, f, d, buildOpts{}))
	big := addRandomItem(t, f, "big-input", 3, 0, 64<<20)
	d = inputDrv(f, "t-quick", "big", big)
	runs := len(f.Machines[0].Invocations())
	r := offload(t, f, d, buildOpts{wantsLocal: true})
	if r.answer != "decline" || !strings.Contains(r.messages, "building locally: local") || !strings.Contains(r.messages, "(learned)") {
		t.Fatalf("answer %s, want decline with the estimates:\n%s", r.answer, r.messages)
	}
	// It was asked which inputs it holds, and nothing more.
	if now := f.Machines[0].Invocations()[runs:]; countContaining(now, "build") != 0 || countContaining(now, "--import") != 0 {
		t.Errorf("the machine built or imported for a declined build: %q", now)
	}
	r = offload(t, f, d, buildOpts{})
	assertBuilt(t, d, "big", r)
}

// TestPlacementWeighsTheInputsClosure: each build's one input is small and new, but it
// refers to a 64 MiB item that one of two equal machines holds: every build goes to
// that one, which lacks only the small input, not to the other, which would need both.
// (Weighing the direct inputs alone makes them equal, and equal machines come in a
// random order.)
func TestPlacementWeighsTheInputsClosure(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	writeMachines(f, nil)
	a, b := f.Machines[0], f.Machines[1]
	big := addRandomItem(t, f, "big-input", 8, 0, 64<<20)
	if err := f.CopyToMachine(a, big); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		nonce := "closure" + itoa(i)
		wrapper, err := f.Local.Drv().AddItem("wrapper", map[string]string{"": nonce + " uses " + big + "\n"})
		if err != nil {
			t.Fatal(err)
		}
		d := inputDrv(f, "t-closure", nonce, wrapper)
		r := offload(t, f, d, buildOpts{})
		assertBuilt(t, d, nonce, r)
		if !builtOn(r, a) {
			t.Fatalf("build %d went to the machine lacking what its input refers to:\n%s", i, r.messages)
		}
	}
	if m := b.Store.Drv(); m.Valid(big) {
		t.Errorf("the big item was sent to the other machine")
	}
}

// TestPlacementLearnsBuildTimes: a short build with a 16 MiB input is offloaded while
// its time is unknown (the default leans that way); once the hook learned from that
// offload how short it is, the next one (new input, same name) stays here.
func TestPlacementLearnsBuildTimes(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	in1 := addRandomItem(t, f, "learn-input", 4, 0, 16<<20)
	d1 := inputDrv(f, "t-short", "first", in1)
	r := offload(t, f, d1, buildOpts{wantsLocal: true})
	assertBuilt(t, d1, "first", r)
	id := m.Name + ":" + itoa(m.Port)
	h, err := placement.Store{Dir: filepath.Join(f.State, "offload")}.Load(id)
	if err != nil || h.Builds["t-short"] == nil || len(h.Builds["t-short"].Work) != 1 || len(h.Transfers) != 1 || len(h.Overheads) != 1 {
		t.Fatalf("learned %+v, %v: want one build of t-short, one transfer, one overhead", h, err)
	}
	in2 := addRandomItem(t, f, "learn-input", 5, 0, 16<<20)
	d2 := inputDrv(f, "t-short", "second", in2)
	r = offload(t, f, d2, buildOpts{wantsLocal: true})
	if r.answer != "decline" || !strings.Contains(r.messages, "(learned)") {
		t.Fatalf("answer %s, want decline from the learned time:\n%s", r.answer, r.messages)
	}
}

// TestPlacementLearnedTimesPickTheMachine: two machines of the same speed field, one
// learned to build t-pick ten times faster than the other: it gets the builds, whatever
// the random order of equal machines.
func TestPlacementLearnedTimesPickTheMachine(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	writeMachines(f, nil)
	slow, fast := f.Machines[0], f.Machines[1]
	store := placement.Store{Dir: filepath.Join(f.State, "offload")}
	for m, secs := range map[*farm.Machine]float64{slow: 100, fast: 10} {
		o := placement.Offload{Name: "t-pick", Speed: 1, Build: time.Duration(secs * float64(time.Second))}
		if err := store.Record(m.Name+":"+itoa(m.Port), o); err != nil {
			t.Fatal(err)
		}
	}
	for _, nonce := range []string{"pick1", "pick2", "pick3"} {
		d := inputDrv(f, "t-pick", nonce)
		r := offload(t, f, d, buildOpts{})
		assertBuilt(t, d, nonce, r)
		if builtOn(r, slow) || !builtOn(r, fast) {
			t.Errorf("the machine learned to be slow at t-pick got a build:\n%s", r.messages)
		}
	}
}

// TestDrainKeepsBuildsOff: `offload drain` keeps new builds off a machine (the other
// takes them), status shows it; with every machine drained the build stays here, or
// waits when the daemon cannot build; `offload undrain` ends it.
func TestDrainKeepsBuildsOff(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	writeMachines(f, nil)
	a, b := f.Machines[0], f.Machines[1]
	aID := a.Name + ":" + itoa(a.Port)
	if out, errOut, st := runOffload(t, f, "drain", aID, "--reason", "new disk"); st != 0 || !strings.Contains(out, "drained '"+aID+"'") {
		t.Fatalf("drain: status %d: %s%s", st, out, errOut)
	}
	for _, nonce := range []string{"dr1", "dr2", "dr3"} {
		d := okDrv(f, nonce)
		r := offload(t, f, d, buildOpts{})
		assertBuilt(t, d, nonce, r)
		if !strings.Contains(r.messages, "machine '"+aID+"' is drained since ") {
			t.Errorf("no line saying the machine is drained:\n%s", r.messages)
		}
		if builtOn(r, a) || !builtOn(r, b) {
			t.Fatalf("a drained machine got a build:\n%s", r.messages)
		}
	}
	out, _, _ := runOffload(t, f, "status", f.MachinesFile())
	if !strings.Contains(out, aID+": drained since ") || !strings.Contains(out, "(new disk)") {
		t.Errorf("status does not show the drain:\n%s", out)
	}
	// By name: every record of 127.0.0.1, so both machines.
	if out, errOut, st := runOffload(t, f, "drain", a.Name); st != 0 || strings.Count(out, "drained '") != 2 {
		t.Fatalf("drain by name: status %d: %s%s", st, out, errOut)
	}
	d := okDrv(f, "alldrained")
	if r := offload(t, f, d, buildOpts{}); r.answer != "postpone" {
		t.Errorf("every machine drained, no local slot: %s, want postpone:\n%s", r.answer, r.messages)
	}
	if r := offload(t, f, d, buildOpts{wantsLocal: true}); r.answer != "decline" {
		t.Errorf("every machine drained, a local slot: %s, want decline:\n%s", r.answer, r.messages)
	}
	if out, errOut, st := runOffload(t, f, "undrain", aID); st != 0 || !strings.Contains(out, "undrained '"+aID+"'") {
		t.Fatalf("undrain: status %d: %s%s", st, out, errOut)
	}
	r := offload(t, f, d, buildOpts{})
	assertBuilt(t, d, "alldrained", r)
	if !builtOn(r, a) {
		t.Errorf("the undrained machine did not take the build (the other is still drained):\n%s", r.messages)
	}
	if _, errOut, st := runOffload(t, f, "drain", "nosuch"); st == 0 || !strings.Contains(errOut, `no machine "nosuch"`) {
		t.Errorf("drain of an unknown machine: status %d: %s", st, errOut)
	}
}
