package integration

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"offload/integration/drv"
	"offload/integration/farm"
	"offload/locking"
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

	// Machine a busy: the kvm request would be postponed, and explain says why.
	l, _, err := locking.AcquireSlot(slotDir(f, a), 1, "test holds it")
	if err != nil || l == nil {
		t.Fatal(err)
	}
	out = explain(t, f, nil, "x86_64-linux", "kvm")
	if !strings.Contains(out, "0 of 1 build slots free") || !strings.Contains(out, "verdict: postpone") {
		t.Errorf("busy:\n%s", out)
	}
	l.Release()

	// Both down: decline (build locally), or postpone with OFFLOAD_FALLBACK=wait.
	a.Server.Stop()
	b.Server.Stop()
	time.Sleep(5500 * time.Millisecond) // past the probe cache: the next decision asks them
	out = explain(t, f, nil, "x86_64-linux")
	if !strings.Contains(out, "verdict: decline (every matching machine is down") {
		t.Errorf("down:\n%s", out)
	}
	out = explain(t, f, []string{"OFFLOAD_FALLBACK=wait"}, "x86_64-linux")
	if !strings.Contains(out, "verdict: postpone (OFFLOAD_FALLBACK=wait") {
		t.Errorf("down, wait:\n%s", out)
	}
}
