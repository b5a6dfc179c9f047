package integration

import (
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"offload/integration/drv"
	"offload/integration/farm"
	"offload/locking"
)

// TestDeclineThenLoop: no machine for aarch64-linux nor for the feature kvm: decline,
// and the same process goes on to the next request, which it accepts.
func TestDeclineThenLoop(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	arm := f.MakeDrv(drv.Spec{Name: "t-arm", System: "aarch64-linux", Args: []string{"-c", "true"}, Nonce: "arm"})
	kvm := f.MakeDrv(drv.Spec{Name: "t-kvm", Args: []string{"-c", "true"}, Features: []string{"kvm", "big-mem"}, Nonce: "kvm"})
	ok := okDrv(f, "loop")
	h := startHook(t, f, buildOpts{})
	for _, d := range []*drv.Derivation{arm, kvm} {
		ans, err := h.Request(true, d.System, d.Path, d.Features())
		if err != nil || ans != "decline" {
			t.Fatalf("%s: answer %q, %v", d.Path, ans, err)
		}
	}
	ans, err := h.Request(false, ok.System, ok.Path, ok.Features())
	if err != nil || ans != "accept" {
		t.Fatalf("answer %q, %v: %q", ans, err, h.Messages())
	}
	if err := f.SendPaths(h, ok); err != nil {
		t.Fatal(err)
	}
	if st, _, err := h.Wait(); err != nil || st != 0 {
		t.Fatalf("status %d, %v: %q", st, err, h.Messages())
	}
}

// TestEOFExitsZero: EOF on fd 0 after some declines: exit 0.
func TestEOFExitsZero(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	arm := f.MakeDrv(drv.Spec{Name: "t-arm", System: "aarch64-linux", Args: []string{"-c", "true"}, Nonce: "eof"})
	h := startHook(t, f, buildOpts{})
	if ans, err := h.Request(true, arm.System, arm.Path, nil); err != nil || ans != "decline" {
		t.Fatalf("answer %q, %v", ans, err)
	}
	h.CloseStdin()
	if st, sig, err := h.Wait(); err != nil || st != 0 || sig {
		t.Fatalf("status %d signaled %v, %v", st, sig, err)
	}
}

// TestMalformedRequest: a garbled line gets a one-line error quoting it, exit non-zero.
func TestMalformedRequest(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	h := startHook(t, f, buildOpts{})
	_, err := h.Request(true, "x86_64-linux", "/etc/passwd", nil)
	if err == nil {
		t.Fatal("a request for /etc/passwd got an answer")
	}
	st, _, _ := h.Wait()
	msgs := h.Messages()
	if st == 0 || len(msgs) != 1 || !strings.Contains(msgs[0], `"1 x86_64-linux /etc/passwd "`) {
		t.Fatalf("status %d, messages %q", st, msgs)
	}
}

// TestMachinesFileMissingOrBroken: no file declines silently; a broken one declines
// with a FILE:LINE:COLUMN message, so the daemon builds locally.
func TestMachinesFileMissingOrBroken(t *testing.T) {
	f := farm.New(t, farm.Options{})
	d := okDrv(f, "nofile")
	r := offload(t, f, d, buildOpts{wantsLocal: true})
	if r.answer != "decline" || r.messages != "" {
		t.Fatalf("missing file: answer %s, messages %q", r.answer, r.messages)
	}
	if err := os.WriteFile(f.MachinesFile(), []byte("(list (build-machine\n  (name \"x\")\n  (port \"22\")))\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = offload(t, f, d, buildOpts{wantsLocal: true})
	if r.answer != "decline" || !strings.Contains(r.messages, f.MachinesFile()+":3:") {
		t.Fatalf("broken file: answer %s, messages %q", r.answer, r.messages)
	}
}

// TestPostponeWhenBusy: parallel-builds 1; while one build holds the slot, the next
// request is accepted into the machine's queue (one place per slot), a third is
// postponed, and accepted once the slot is free.
func TestPostponeWhenBusy(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	slow := sleepDrv(f, "busy", 3)
	queued := okDrv(f, "queued")
	other := okDrv(f, "other")
	h1 := startHook(t, f, buildOpts{})
	if ans, err := h1.Request(false, slow.System, slow.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("first: %q %v %q", ans, err, h1.Messages())
	}
	if err := f.SendPaths(h1, slow); err != nil {
		t.Fatal(err)
	}
	hq := startHook(t, f, buildOpts{})
	if ans, err := hq.Request(false, queued.System, queued.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("second, into the queue: %q %v %q", ans, err, hq.Messages())
	}
	h2 := startHook(t, f, buildOpts{})
	ans, err := h2.Request(false, other.System, other.Path, nil)
	if err != nil || ans != "postpone" {
		t.Fatalf("third while busy and the queue full: %q %v %q", ans, err, h2.Messages())
	}
	if !contains(h2.Messages(), "busy") {
		t.Errorf("no message saying why: %q", h2.Messages())
	}
	if err := f.SendPaths(hq, queued); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := h1.Wait(); st != 0 {
		t.Fatalf("first build: status %d %q", st, h1.Messages())
	}
	if st, _, _ := hq.Wait(); st != 0 || !contains(hq.Messages(), "takes the first that frees") {
		t.Fatalf("queued build: status %d %q", st, hq.Messages())
	}
	// The daemon asks again; the same process now accepts.
	ans, err = h2.Request(false, other.System, other.Path, nil)
	if err != nil || ans != "accept" {
		t.Fatalf("third after: %q %v %q", ans, err, h2.Messages())
	}
	if err := f.SendPaths(h2, other); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := h2.Wait(); st != 0 {
		t.Fatalf("third build: status %d %q", st, h2.Messages())
	}
}

// TestSlotsAreAHardLimit: N hooks at once against parallel-builds K: K accepted onto
// the build slots and K into the queue, the rest postponed; hooks killed with SIGKILL
// free their slots at once.
func TestSlotsAreAHardLimit(t *testing.T) {
	const k, n = 2, 6
	f := farm.New(t, farm.Options{ParallelBuilds: k})
	writeMachines(f, nil)
	d := okDrv(f, "slots")
	var mu sync.Mutex
	answers := map[string]int{}
	var accepted []*hookRef
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := startHook(t, f, buildOpts{})
			ans, err := h.Request(false, d.System, d.Path, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Errorf("request: %v", err)
				return
			}
			answers[ans]++
			if ans == "accept" {
				accepted = append(accepted, &hookRef{h})
			}
		}()
	}
	wg.Wait()
	if answers["accept"] != 2*k || answers["postpone"] != n-2*k {
		t.Fatalf("answers %v, want %d accept (%d building, %d queued) and %d postpone", answers, 2*k, k, k, n-2*k)
	}
	// Accepted hooks wait for their path lines and hold their slots or queue places;
	// kill them.
	for _, a := range accepted {
		a.h.Kill()
		a.h.Wait()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got []*locking.Lock
		for range k {
			l, _, err := locking.AcquireSlot(slotDir(f, f.Machines[0]), k, "test")
			if err != nil {
				t.Fatal(err)
			}
			if l != nil {
				got = append(got, l)
			}
		}
		for _, l := range got {
			l.Release()
		}
		if len(got) == k {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the killed hook's slot is still held")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type hookRef struct {
	h interface {
		Kill()
		Wait() (int, bool, error)
	}
}

// TestOverloadedMachinePostpones: a machine at or above its overload threshold is
// skipped, and the request postponed with the reason.
func TestOverloadedMachinePostpones(t *testing.T) {
	f := farm.New(t, farm.Options{})
	f.WriteMachinesFile(func(m *farm.Machine) string { return "(overload-threshold 0.0)" })
	d := okDrv(f, "over")
	r := offload(t, f, d, buildOpts{})
	if r.answer != "postpone" || !strings.Contains(r.messages, "overloaded") {
		t.Fatalf("answer %s, messages %q", r.answer, r.messages)
	}
}

// TestPrefersFasterMachine: of two idle machines, the faster one gets the build.
func TestPrefersFasterMachine(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	fast := f.Machines[1]
	writeMachines(f, func(m *farm.Machine) string {
		if m == fast {
			return "(speed 100.0)"
		}
		return "(speed 0.01)"
	})
	d := okDrv(f, "fast")
	r := offload(t, f, d, buildOpts{shell: true})
	if r.status != 0 {
		t.Fatalf("status %d %q", r.status, r.messages)
	}
	if !contains(fast.Invocations(), "build") || contains(f.Machines[0].Invocations(), "build") {
		t.Errorf("the slow machine built it: fast %q slow %q", fast.Invocations(), f.Machines[0].Invocations())
	}
}
