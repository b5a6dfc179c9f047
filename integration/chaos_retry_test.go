package integration

import (
	"strings"
	"testing"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/farm"
)

// usedMachine is the farm machine that the hook's lines say it sends to, builds on or
// retrieves from, or nil.
func usedMachine(f *farm.Farm, h *daemon.Hook) *farm.Machine {
	for _, l := range h.Messages() {
		if !strings.Contains(l, "sending ") && !strings.Contains(l, "offloading '") && !strings.Contains(l, "retrieving ") {
			continue
		}
		for _, m := range f.Machines {
			if strings.Contains(l, "'"+machineName(m)+"'") {
				return m
			}
		}
	}
	return nil
}

// TestChaosRetry: the machine doing an accepted build dies (sshd and sessions killed)
// or freezes (SIGSTOP: a hung machine, noticed by ssh's keepalives) during the upload,
// the build or the download; the hook does the build again on the other machine and
// delivers it, restored all or nothing, with one line per attempt; the failed machine's
// slot is free and nothing of ours is left running.
func TestChaosRetry(t *testing.T) {
	needChaos(t)
	phases := []struct {
		name string
		make func(f *farm.Farm) *drv.Derivation
		when func(h *daemon.Hook) bool
	}{
		{"upload", func(f *farm.Farm) *drv.Derivation {
			in := addRandomItem(t, f, "retry-upload", 9, 0, 300_000_000)
			return f.MakeDrv(drv.Spec{Name: "t-up", Args: []string{"-c", `echo "$IN" > "$out"`},
				Env: map[string]string{"IN": in}, InputSrcs: []string{in}, Nonce: "retry-up"})
		}, func(h *daemon.Hook) bool { return contains(h.Messages(), "sending ") }},
		{"build", func(f *farm.Farm) *drv.Derivation { return sleepDrv(f, "retry-build", 20) },
			func(h *daemon.Hook) bool { return strings.Contains(string(h.Log()), "t-sleep start") }},
		{"download", func(f *farm.Farm) *drv.Derivation { return bigOutDrv(f, "retry-down", 400_000_000) },
			func(h *daemon.Hook) bool { return contains(h.Messages(), "retrieving ") }},
	}
	faults := []string{"killed", "frozen"}
	if chaosShort() {
		faults = []string{"killed"}
		phases = phases[1:2]
	}
	for _, fault := range faults {
		for _, ph := range phases {
			t.Run(fault+"/"+ph.name, func(t *testing.T) {
				f := farm.New(t, farm.Options{Machines: 2})
				writeMachines(f, nil)
				d := ph.make(f)
				h := startHook(t, f, buildOpts{})
				if ans, err := h.Request(false, d.System, d.Path, nil); err != nil || ans != "accept" {
					t.Fatalf("%q %v %q", ans, err, h.Messages())
				}
				if err := f.SendPaths(h, d); err != nil {
					t.Fatal(err)
				}
				if !waitFor(60*time.Second, func() bool { return ph.when(h) }) {
					t.Fatalf("the %s never started: %q", ph.name, h.Messages())
				}
				m := usedMachine(f, h)
				if m == nil {
					t.Fatalf("no line says which machine took the build: %q", h.Messages())
				}
				switch fault {
				case "killed":
					m.Die(t)
				case "frozen":
					m.Freeze()
					t.Cleanup(m.Thaw)
				}
				drill(t, "machine %s %s during the %s", machineName(m), fault, ph.name)
				start := time.Now()
				st, sig, err := h.Wait()
				msgs := strings.Join(h.Messages(), "\n")
				if err != nil || sig || st != 0 {
					t.Fatalf("status %d signaled %v err %v, want the build delivered:\n%s", st, sig, err, msgs)
				}
				drill(t, "delivered %s after the fault", time.Since(start).Round(time.Second))
				if !strings.Contains(msgs, "attempt 1 of '"+d.Path+"' failed on machine '"+machineName(m)+"'") ||
					!strings.Contains(msgs, "attempt 2 of '"+d.Path+"': machine '") {
					t.Errorf("no line per attempt:\n%s", msgs)
				} else {
					drill(t, "one line per attempt")
				}
				if left := tempEntries(t, f); len(left) > 0 {
					t.Errorf("temporaries left in the store: %q", left)
				} else {
					drill(t, "nothing half-written in the local store")
				}
				if fault == "frozen" {
					m.Thaw()
				}
				if !waitFor(30*time.Second, func() bool { return slotFree(t, f, m, 1) }) {
					t.Errorf("the failed machine's slot is still held")
				} else {
					drill(t, "the failed machine's slot is free")
				}
			})
		}
	}
}
