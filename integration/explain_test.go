package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"offload/integration/drv"
	"offload/integration/farm"
	"offload/locking"
	"offload/statedir"
)

func explain(t *testing.T, f *farm.Farm, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(f.Bin.Offload, append([]string{"explain"}, args...)...)
	cmd.Env = append(f.HookEnv(), env...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("offload explain %q: %v\n%s", args, err, b)
	}
	return string(b)
}

// TestExplain: the verdict and the reason for each machine, for a system, a feature
// list and a .drv file, without taking a slot.
func TestExplain(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	a, b := f.Machines[0], f.Machines[1]
	writeMachines(f, func(m *farm.Machine) string {
		if m == a {
			return `(speed 3.0) (features '("kvm"))`
		}
		return ""
	})
	out := explain(t, f, nil, "x86_64-linux", "kvm")
	if !strings.Contains(out, "no match: lacks feature \"kvm\"") || !strings.Contains(out, "verdict: accept on machine '127.0.0.1:"+itoa(a.Port)+"'") {
		t.Errorf("kvm:\n%s", out)
	}
	out = explain(t, f, nil, "aarch64-linux")
	if !strings.Contains(out, "verdict: decline") || strings.Count(out, "no match") != 2 {
		t.Errorf("aarch64:\n%s", out)
	}
	d := f.MakeDrv(drv.Spec{Name: "t-kvm", Args: []string{"-c", "true"}, Features: []string{"kvm"}, Nonce: "explain"})
	if out = explain(t, f, nil, d.Path); !strings.Contains(out, "features kvm") {
		t.Errorf("drv:\n%s", out)
	}

	// Machine a's slot taken: the kvm request would wait in its queue; with the queue
	// full too, it would be postponed, and explain says why.
	l, _, err := locking.AcquireSlot(slotDir(f, a), 1, "test holds it")
	if err != nil || l == nil {
		t.Fatal(err)
	}
	out = explain(t, f, nil, "x86_64-linux", "kvm")
	if !strings.Contains(out, "0 of 1 build slots free and 1 of 1 places in its queue") || !strings.Contains(out, "would wait in its queue") {
		t.Errorf("slot taken:\n%s", out)
	}
	q, _, err := locking.AcquireSlot(statedir.Layout{Dir: filepath.Join(f.State, "offload")}.Queue(a.Name+":"+itoa(a.Port)), 1, "test holds it")
	if err != nil || q == nil {
		t.Fatal(err)
	}
	out = explain(t, f, nil, "x86_64-linux", "kvm")
	if !strings.Contains(out, "0 of 1 build slots free and 0 of 1 places in its queue") || !strings.Contains(out, "verdict: postpone") {
		t.Errorf("busy:\n%s", out)
	}
	l.Release()
	q.Release()

	// Both down: decline (build locally), or postpone with OFFLOAD_FALLBACK=wait.
	a.Server.Stop()
	b.Server.Stop()
	// No probe cache to hide their death (explain writes none; be sure of it).
	states, _ := filepath.Glob(filepath.Join(f.State, "offload", "*.state"))
	for _, st := range states {
		os.Remove(st)
	}
	out = explain(t, f, nil, "x86_64-linux")
	if !strings.Contains(out, "verdict: decline (every matching machine is down") {
		t.Errorf("down:\n%s", out)
	}
	out = explain(t, f, []string{"OFFLOAD_FALLBACK=wait"}, "x86_64-linux")
	if !strings.Contains(out, "verdict: postpone (OFFLOAD_FALLBACK=wait") {
		t.Errorf("down, wait:\n%s", out)
	}
	// A dry run changes nothing: the machines it found down are not in backoff.
	if states, _ := filepath.Glob(filepath.Join(f.State, "offload", "*.state")); len(states) > 0 {
		t.Errorf("explain wrote machine state: %q", states)
	}
}
