package integration

import (
	"os"
	"strings"
	"testing"
	"time"

	"offload/integration/farm"
	"offload/locking"
	"offload/machines"
	"offload/placement"
)

// Issue 9: when every matching machine is down, build locally if the daemon can.

func TestAllDownWantsLocalDeclines(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	f.Machines[0].Server.Stop()
	d := okDrv(f, "down1")
	r := offload(t, f, d, buildOpts{wantsLocal: true})
	if r.answer != "decline" {
		t.Fatalf("answer %s, want decline: %q", r.answer, r.messages)
	}
	if !strings.Contains(r.messages, "down") || !strings.Contains(r.messages, "127.0.0.1") {
		t.Errorf("no message naming the down machine: %q", r.messages)
	}
	// The machine is now in backoff: the next request costs no ssh round trip and
	// still says why.
	start := time.Now()
	r = offload(t, f, d, buildOpts{wantsLocal: true})
	if r.answer != "decline" || !strings.Contains(r.messages, "since") {
		t.Fatalf("second: answer %s: %q", r.answer, r.messages)
	}
	t.Logf("decision with the machine in backoff took %s", time.Since(start))
}

func TestAllDownNoLocalSlotPostpones(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	f.Machines[0].Server.Stop()
	d := okDrv(f, "down0")
	h := startHook(t, f, buildOpts{})
	for i := 0; i < 3; i++ {
		ans, err := h.Request(false, d.System, d.Path, nil)
		if err != nil || ans != "postpone" {
			t.Fatalf("request %d: %q %v", i, ans, err)
		}
	}
	// Said once, not at every request (the daemon asks every 5 s).
	if n := countContaining(h.Messages(), "is down"); n != 1 {
		t.Errorf("the down message came %d times: %q", n, h.Messages())
	}
}

func TestFallbackWaitPostpones(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	f.Machines[0].Server.Stop()
	d := okDrv(f, "wait")
	r := offload(t, f, d, buildOpts{wantsLocal: true, env: []string{"OFFLOAD_FALLBACK=wait"}})
	if r.answer != "postpone" {
		t.Fatalf("answer %s, want postpone: %q", r.answer, r.messages)
	}
}

func TestOneDownOneBusyQueues(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	writeMachines(f, nil)
	busy := f.Machines[1]
	f.Machines[0].Server.Stop()
	slow := sleepDrv(f, "busy", 3)
	h1 := startHook(t, f, buildOpts{})
	if ans, err := h1.Request(false, slow.System, slow.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("first: %q %v %q", ans, err, h1.Messages())
	}
	if err := f.SendPaths(h1, slow); err != nil {
		t.Fatal(err)
	}
	_ = busy
	d := okDrv(f, "other")
	// Placement off: with it, waiting a whole build in the queue may cost more than
	// building here, and the decline would then be placement's (placement_test.go).
	r := offload(t, f, d, buildOpts{wantsLocal: true, env: []string{placement.Env + "=off"}})
	// Not a decline: the busy machine takes it into its queue (one machine busy, not
	// down), and it is built once the first build ends.
	if r.answer != "accept" || r.status != 0 || !strings.Contains(r.messages, "takes the first that frees") {
		t.Fatalf("answer %s, status %d, want accept into the busy machine's queue: %q", r.answer, r.status, r.messages)
	}
	h1.Wait()
}

func TestBackAfterBackoffAccepts(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	m.Server.Stop()
	d := okDrv(f, "back")
	if r := offload(t, f, d, buildOpts{wantsLocal: true}); r.answer != "decline" {
		t.Fatalf("while down: %s %q", r.answer, r.messages)
	}
	m.Server.Restart(t)
	// Within the backoff the machine is still skipped without a round trip...
	if r := offload(t, f, d, buildOpts{wantsLocal: true}); r.answer != "decline" {
		t.Fatalf("within backoff: %s %q", r.answer, r.messages)
	}
	// ...and after it (5 s after the first failure) it is tried and used again.
	time.Sleep(5500 * time.Millisecond)
	r := offload(t, f, d, buildOpts{wantsLocal: true})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("after backoff: %s %d %q", r.answer, r.status, r.messages)
	}
}

// TestSSHDKilledMidBuild: the connection dies during the build and no attempt is left
// (OFFLOAD_ATTEMPTS=1): one transient exit, nothing in the local store, the slot free.
func TestSSHDKilledMidBuild(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	d := sleepDrv(f, "kill", 20)
	before := storeEntries(t, f)
	h := startHook(t, f, buildOpts{env: []string{"OFFLOAD_ATTEMPTS=1"}})
	if ans, err := h.Request(false, d.System, d.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("%q %v %q", ans, err, h.Messages())
	}
	if err := f.SendPaths(h, d); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(string(h.Log()), "t-sleep start") {
		if time.Now().After(deadline) {
			t.Fatalf("the build never started: %q", h.Messages())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The machine dies: its sshd with every session, its daemon with the build. Our
	// own ssh clients live on until they notice.
	m.Die(t)
	st, sig, err := h.Wait()
	if err != nil || sig || st == 0 || st == 100 || st == 101 {
		t.Fatalf("status %d signaled %v err %v, want a transient failure: %q", st, sig, err, h.Messages())
	}
	assertNotInStore(t, f, d.OutputPaths(), before)
	l, _, err := locking.AcquireSlot(slotDir(f, m), 1, "test")
	if err != nil || l == nil {
		t.Fatalf("slot not free after the hook exited: %v", err)
	}
	l.Release()
	if msgs := strings.Join(h.Messages(), "\n"); !strings.Contains(msgs, "failed 1 times for want of a working machine; the last, machine '"+machineName(m)+"'") {
		t.Errorf("no line says the build failed for want of a machine:\n%s", msgs)
	}
	_ = os.Getpid
}

// TestMachineKilledMidBuildRetriesElsewhere: the machine building an accepted build dies
// (its sshd and sessions killed); the build is done again on the other machine and
// delivered, with one line per attempt, and the dead machine's slot is free.
func TestMachineKilledMidBuildRetriesElsewhere(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	writeMachines(f, nil)
	d := sleepDrv(f, "retry", 8)
	h := startHook(t, f, buildOpts{})
	if ans, err := h.Request(false, d.System, d.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("%q %v %q", ans, err, h.Messages())
	}
	if err := f.SendPaths(h, d); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(string(h.Log()), "t-sleep start") {
		if time.Now().After(deadline) {
			t.Fatalf("the build never started: %q", h.Messages())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var first, other *farm.Machine
	for i, m := range f.Machines {
		if strings.Contains(strings.Join(h.Messages(), "\n"), "to '"+machineName(m)+"'...") {
			first, other = m, f.Machines[1-i]
		}
	}
	if first == nil {
		t.Fatalf("no line says where the build went: %q", h.Messages())
	}
	first.Die(t)
	st, sig, err := h.Wait()
	msgs := strings.Join(h.Messages(), "\n")
	if err != nil || sig || st != 0 {
		t.Fatalf("status %d signaled %v err %v, want the build delivered:\n%s", st, sig, err, msgs)
	}
	for _, out := range d.OutputPaths() {
		if _, err := os.Stat(out); err != nil {
			t.Errorf("output %s not delivered: %v", out, err)
		}
	}
	for _, want := range []string{
		"attempt 1 of '" + d.Path + "' failed on machine '" + machineName(first) + "'",
		"attempt 2 of '" + d.Path + "': machine '" + machineName(other) + "'",
	} {
		if !strings.Contains(msgs, want) {
			t.Errorf("no line %q:\n%s", want, msgs)
		}
	}
	l, _, err := locking.AcquireSlot(slotDir(f, first), 1, "test")
	if err != nil || l == nil {
		t.Fatalf("the dead machine's slot is still held: %v", err)
	}
	l.Release()
}

// TestSlowMachineIsNotDown: a machine that answers too slowly under load is skipped for
// that request, but not put into backoff: once it answers in time again, the very next
// request may go there (a dead one would wait out its backoff).
func TestSlowMachineIsNotDown(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	m.SetShellDelay(t, 15*time.Second) // beyond the probe's 10 s
	d := okDrv(f, "slow")
	r := offload(t, f, d, buildOpts{})
	if r.answer != "postpone" {
		t.Fatalf("slow machine: answer %s, want postpone:\n%s", r.answer, r.messages)
	}
	if !strings.Contains(r.messages, "no answer within") {
		t.Errorf("no line says the machine was slow:\n%s", r.messages)
	}
	health, err := machines.State{Dir: f.State + "/offload"}.Health(m.StateKey())
	if err != nil {
		t.Fatal(err)
	}
	if health.Down(time.Now()) {
		t.Fatalf("a slow machine was put into backoff: %+v", health)
	}
	m.SetShellDelay(t, 0)
	r = offload(t, f, d, buildOpts{wantsLocal: true})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("once it answers again: answer %s, status %d:\n%s", r.answer, r.status, r.messages)
	}
}
