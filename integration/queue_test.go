package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"offload/integration/drv"
	"offload/integration/farm"
)

// gatedDrv builds only once gate exists, writing "start NONCE" and "end NONCE" to
// events (one file for all builds of a test, on this host) around its wait.
func gatedDrv(f *farm.Farm, nonce, gate, events string) *drv.Derivation {
	return f.MakeDrv(drv.Spec{
		Name:  "t-gated",
		Args:  []string{"-c", `echo "start $NONCE" >> "$EVENTS"; while [ ! -e "$GATE" ]; do sleep 0.02; done; echo "end $NONCE" >> "$EVENTS"; echo "hello $NONCE" > "$out"`},
		Env:   map[string]string{"NONCE": nonce, "GATE": gate, "EVENTS": events},
		Nonce: nonce,
	})
}

// TestQueuedBuildTakesTheFreedSlot: parallel-builds 1. While build A holds the slot,
// build B is accepted into the queue instead of waiting for the daemon's next poll; B
// does not start while A runs, and starts once A ends, without a new request. At no
// time do two builds run on the machine.
func TestQueuedBuildTakesTheFreedSlot(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	gate, events := filepath.Join(f.Dir, "gate"), filepath.Join(f.Dir, "events")
	a, b := gatedDrv(f, "A", gate, events), gatedDrv(f, "B", gate, events)

	ha := startHook(t, f, buildOpts{})
	if ans, err := ha.Request(false, a.System, a.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("A: %q %v %q", ans, err, ha.Messages())
	}
	if err := f.SendPaths(ha, a); err != nil {
		t.Fatal(err)
	}
	if !waitFor(60*time.Second, func() bool { return strings.Contains(mustReadOr(events), "start A") }) {
		t.Fatalf("A did not start: %q", ha.Messages())
	}
	hb := startHook(t, f, buildOpts{})
	if ans, err := hb.Request(false, b.System, b.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("B while A builds: %q %v, want accept into the queue; %q", ans, err, hb.Messages())
	}
	if err := f.SendPaths(hb, b); err != nil {
		t.Fatal(err)
	}
	if !waitFor(60*time.Second, func() bool { return contains(hb.Messages(), "takes the first that frees") }) {
		t.Fatalf("B does not say it waits: %q", hb.Messages())
	}
	if got := mustReadOr(events); strings.Contains(got, "start B") {
		t.Fatalf("B started while A holds the only slot: %q", got)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, h := range []interface{ Wait() (int, bool, error) }{ha, hb} {
		if st, _, err := h.Wait(); err != nil || st != 0 {
			t.Fatalf("status %d, %v; A: %q; B: %q", st, err, ha.Messages(), hb.Messages())
		}
	}
	if got, want := strings.Fields(strings.ReplaceAll(mustReadOr(events), "\n", " ")), []string{"start", "A", "end", "A", "start", "B", "end", "B"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("builds on the machine: %q, want A then B, never both", got)
	}
	assertBuilt(t, b, "B", result{answer: "accept"})
}

func mustReadOr(file string) string {
	b, _ := os.ReadFile(file)
	return string(b)
}

// TestKilledQueuedHookFreesItsPlace: parallel-builds 1. While A builds, B waits in the
// machine's queue and the daemon kills B's hook (SIGKILL on its group, as it does to a
// hook it no longer wants). B's place in the queue is free at once: C is accepted into
// it, and builds once A is done; nothing B held stays held.
func TestKilledQueuedHookFreesItsPlace(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	gate, events := filepath.Join(f.Dir, "gate"), filepath.Join(f.Dir, "events")
	a, b, c := gatedDrv(f, "A", gate, events), gatedDrv(f, "B", gate, events), gatedDrv(f, "C", gate, events)

	ha := startHook(t, f, buildOpts{})
	if ans, err := ha.Request(false, a.System, a.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("A: %q %v %q", ans, err, ha.Messages())
	}
	if err := f.SendPaths(ha, a); err != nil {
		t.Fatal(err)
	}
	if !waitFor(60*time.Second, func() bool { return strings.Contains(mustReadOr(events), "start A") }) {
		t.Fatalf("A did not start: %q", ha.Messages())
	}
	hb := startHook(t, f, buildOpts{})
	if ans, err := hb.Request(false, b.System, b.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("B while A builds: %q %v; %q", ans, err, hb.Messages())
	}
	if err := f.SendPaths(hb, b); err != nil {
		t.Fatal(err)
	}
	if !waitFor(60*time.Second, func() bool { return contains(hb.Messages(), "takes the first that frees") }) {
		t.Fatalf("B does not say it waits: %q", hb.Messages())
	}
	// The queue is full now: a third build is postponed...
	if r := offload(t, f, c, buildOpts{}); r.answer != "postpone" {
		t.Fatalf("C with A building and B queued: %s, want postpone:\n%s", r.answer, r.messages)
	}
	// ...until B's hook dies.
	hb.Kill()
	hb.Wait()
	hc := startHook(t, f, buildOpts{})
	if ans, err := hc.Request(false, c.System, c.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("C after B's hook was killed: %q %v, want accept into the freed place; %q", ans, err, hc.Messages())
	}
	if err := f.SendPaths(hc, c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]interface{ Wait() (int, bool, error) }{"A": ha, "C": hc} {
		if st, _, err := h.Wait(); err != nil || st != 0 {
			t.Fatalf("%s: status %d, %v; A: %q; C: %q", name, st, err, ha.Messages(), hc.Messages())
		}
	}
	if got := mustReadOr(events); strings.Contains(got, "start B") {
		t.Errorf("the killed B was built: %q", got)
	}
	assertBuilt(t, c, "C", result{answer: "accept"})
	if !slotFree(t, f, f.Machines[0], 1) {
		t.Errorf("the slot is still held after every hook ended")
	}
}
