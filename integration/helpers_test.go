package integration

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/farm"
)

func TestMain(m *testing.M) {
	code := m.Run()
	farm.Cleanup()
	os.Exit(code)
}

// result is what the daemon saw of one offloaded build.
type result struct {
	answer   string
	status   int
	signaled bool
	messages string
	log      string
	hook     *daemon.Hook
}

type buildOpts struct {
	maxSilent, timeout int
	wantsLocal         bool
	env                []string
	// guixSystem starts the hook as Guix System's daemon does: with its environment
	// (farm.GuixSystemEnv) and as the child of a guix-daemon with guix beside it.
	guixSystem bool
	// shell puts every machine on the shell path (OFFLOAD_PATH=shell): for tests of
	// what the remote shell script and the guix stand-in do (its hostile modes, its
	// compression, its invocations), which the daemon path never runs.
	shell bool
}

func startHook(t *testing.T, f *farm.Farm, o buildOpts) *daemon.Hook {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	argv, env := f.HookArgv("x86_64-linux", o.maxSilent, true, o.timeout), f.HookEnv()
	if o.guixSystem {
		argv, env = f.DaemonHookArgv("x86_64-linux", o.maxSilent, true, o.timeout), f.GuixSystemEnv()
	}
	env = append(env, o.env...)
	if o.shell {
		env = append(env, "OFFLOAD_PATH=shell")
	}
	h, err := daemon.StartWith(ctx, argv, env, daemon.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Kill)
	return h
}

// offload runs one request through a fresh hook and, when accepted, the whole build.
func offload(t *testing.T, f *farm.Farm, d *drv.Derivation, o buildOpts) result {
	t.Helper()
	return build(t, f, startHook(t, f, o), d, o.wantsLocal)
}

// build asks h about d and, when accepted, sends the paths and waits for the hook.
func build(t *testing.T, f *farm.Farm, h *daemon.Hook, d *drv.Derivation, wantsLocal bool) result {
	t.Helper()
	ans, err := h.Request(wantsLocal, d.System, d.Path, d.Features())
	if err != nil {
		t.Fatalf("request: %v (messages: %q)", err, h.Messages())
	}
	r := result{answer: ans, hook: h}
	if ans == "accept" {
		if err := f.SendPaths(h, d); err != nil {
			t.Fatal(err)
		}
	} else if err := h.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	if r.status, r.signaled, err = h.Wait(); err != nil {
		t.Fatal(err)
	}
	r.messages = strings.Join(h.Messages(), "\n")
	r.log = string(h.Log())
	return r
}

// okDrv is a derivation whose builder uses an input and writes its output.
func okDrv(f *farm.Farm, nonce string) *drv.Derivation {
	in := f.AddLocalItem("input-"+nonce, map[string]string{"data": "input data " + nonce + "\n"})
	return f.MakeDrv(drv.Spec{
		Name:      "t-ok",
		Args:      []string{"-c", `echo "building t-ok nonce=$NONCE"; cat "$IN/data" > "$out"; echo "hello $NONCE" >> "$out"`},
		Env:       map[string]string{"NONCE": nonce, "IN": in},
		InputSrcs: []string{in},
		Nonce:     nonce,
	})
}

// sleepDrv builds for secs seconds, printing one line first.
func sleepDrv(f *farm.Farm, nonce string, secs int) *drv.Derivation {
	return f.MakeDrv(drv.Spec{
		Name:  "t-sleep",
		Args:  []string{"-c", `echo "t-sleep start $NONCE"; sleep ` + itoa(secs) + `; echo done > "$out"`},
		Env:   map[string]string{"NONCE": nonce},
		Nonce: nonce,
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

// storeEntries lists the local store's directory, temporary entries included.
func storeEntries(t *testing.T, f *farm.Farm) []string {
	t.Helper()
	es, err := os.ReadDir(f.Local.Physical)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func assertNotInStore(t *testing.T, f *farm.Farm, paths []string, before []string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is in the local store", p)
		}
	}
	after := storeEntries(t, f)
	if len(after) != len(before) {
		t.Errorf("local store changed: before %q, after %q", before, after)
	}
}

func contains(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func countContaining(list []string, sub string) int {
	n := 0
	for _, s := range list {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func slotDir(f *farm.Farm, m *farm.Machine) string {
	return filepath.Join(f.State, "offload", m.Name+":"+itoa(m.Port))
}

// writeMachines writes the farm's machines file with load checks off (the test
// machine's own load is whatever else runs on it), plus extra fields.
func writeMachines(f *farm.Farm, extra func(m *farm.Machine) string) {
	f.WriteMachinesFile(func(m *farm.Machine) string {
		x := "(overload-threshold #f)"
		if extra != nil {
			if e := extra(m); e != "" {
				x += "\n  " + e
			}
		}
		return x
	})
}
