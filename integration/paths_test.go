package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"offload/hook"
	"offload/integration/drv"
	"offload/integration/farm"
	"offload/machines"
	"offload/placement"
	"offload/statedir"
)

// loadMachine reads the farm's machine m as the hook does.
func loadMachine(t *testing.T, f *farm.Farm, m *farm.Machine) *machines.Machine {
	t.Helper()
	loaded, _, err := machines.Load(f.MachinesFile())
	if err != nil {
		t.Fatal(err)
	}
	for _, lm := range loaded {
		if lm.Port == m.Port {
			return lm
		}
	}
	t.Fatalf("machine %s not in the machines file", machineName(m))
	return nil
}

// TestRefusedForwardingFallsBackToShell: a machine whose sshd refuses every forward
// (DisableForwarding yes) gets the shell path, says so once with the fix, and keeps it
// (remembered) for the next build without saying it again.
func TestRefusedForwardingFallsBackToShell(t *testing.T) {
	f := farm.New(t, farm.Options{RefuseForwarding: []int{0}})
	writeMachines(f, nil)
	m := f.Machines[0]
	r := offload(t, f, okDrv(f, "refused1"), buildOpts{})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s, status %d; messages:\n%s", r.answer, r.status, r.messages)
	}
	line := "machine '" + machineName(m) + "': offloading through a remote shell (slower): its sshd refuses to forward to " + m.DaemonSocket()
	if !strings.Contains(r.messages, line) || !strings.Contains(r.messages, "AllowTcpForwarding yes") {
		t.Errorf("no line says the machine gets the shell path, why and the fix:\n%s", r.messages)
	}
	if !contains(m.Invocations(), "archive --missing") {
		t.Errorf("the shell path did not run: %q", m.Invocations())
	}
	rec := hook.ReadPath(f.State+"/offload", loadMachine(t, f, m))
	if rec.Path != "shell" {
		t.Errorf("the path was not remembered: %+v", rec)
	}

	r = offload(t, f, okDrv(f, "refused2"), buildOpts{})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("second build: answer %s, status %d; messages:\n%s", r.answer, r.status, r.messages)
	}
	if strings.Contains(r.messages, "offloading through") {
		t.Errorf("the remembered path was said again:\n%s", r.messages)
	}
}

// TestDaemonElsewhereFallsBackToShell: a machine whose daemon does not listen at its
// daemon-socket (the remote socket is missing) still builds, on the shell path.
func TestDaemonElsewhereFallsBackToShell(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	m.StopDaemon(t)
	if _, err := os.Stat(m.DaemonSocket()); err == nil {
		os.Remove(m.DaemonSocket())
	}
	r := offload(t, f, okDrv(f, "elsewhere"), buildOpts{})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s, status %d; messages:\n%s", r.answer, r.status, r.messages)
	}
	if !strings.Contains(r.messages, "or no guix-daemon listens there") {
		t.Errorf("no line says why the shell path is used:\n%s", r.messages)
	}
	if !contains(m.Invocations(), "build") {
		t.Errorf("the shell path did not build: %q", m.Invocations())
	}
}

// TestTextInputsNeedNoSignature: a derivation whose builder script is a text item (as
// every gexp's is in Guix) goes up by AddTextToStore alone, script and .drv: nothing
// needs a signature, so the machine checks none (on a real machine that check starts a
// Guile helper). A plain item beside it still goes in the signed bundle.
func TestTextInputsNeedNoSignature(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	st := f.Local.Drv()
	script, err := st.AddText("t-text-builder", "echo built from a text script > \"$out\"\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := f.MakeDrv(drv.Spec{Name: "t-text", Args: []string{"-e", script}, InputSrcs: []string{script}, Nonce: "text"})
	r := offload(t, f, d, buildOpts{env: []string{"OFFLOAD_VERBOSE=1"}})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s status %d:\n%s", r.answer, r.status, r.messages)
	}
	if n := strings.Count(r.messages, ": add-text-to-store paths="); n != 2 {
		t.Errorf("%d items added as text, want the script and the .drv:\n%s", n, r.messages)
	}
	if strings.Contains(r.messages, ": import-paths ") {
		t.Errorf("a signed bundle went up although every input is text:\n%s", r.messages)
	}
	out, err := os.ReadFile(d.OutputPaths()[0])
	if err != nil || string(out) != "built from a text script\n" {
		t.Errorf("output %q %v", out, err)
	}

	// The same script beside a plain item: the item goes signed, the texts as text.
	item, err := st.AddItem("t-plain-input", map[string]string{"": "plain\n"})
	if err != nil {
		t.Fatal(err)
	}
	d2 := f.MakeDrv(drv.Spec{Name: "t-text2", Args: []string{"-e", script}, InputSrcs: []string{script, item}, Nonce: "text2"})
	r = offload(t, f, d2, buildOpts{env: []string{"OFFLOAD_VERBOSE=1"}})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s status %d:\n%s", r.answer, r.status, r.messages)
	}
	if !strings.Contains(r.messages, ": import-paths paths=1 ") || strings.Count(r.messages, ": add-text-to-store paths=") != 1 {
		t.Errorf("want the plain item signed and the .drv as text (the script is there already):\n%s", r.messages)
	}
	if !m.Store.Drv().Valid(item) {
		t.Errorf("the plain item is not on the machine")
	}
}

// TestSourceInputsGoByAddToStore: a source item (a local-file or a source tree: added
// with a recursive sha256, no references) goes up by AddToStore, its nar read by the
// machine's daemon inline, without a signature and without the round trip per 32 KiB of
// a bundle; the machine gets it at the same path.
func TestSourceInputsGoByAddToStore(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	src, err := f.Local.Drv().AddSource("t-src", map[string]string{"README": "a source tree\n", "src/main.c": "int main(void) { return 0; }\n", "run*": "#!/bin/sh\n"})
	if err != nil {
		t.Fatal(err)
	}
	d := f.MakeDrv(drv.Spec{Name: "t-uses-src", Args: []string{"-c", `cat "$SRC/README" > "$out"`},
		Env: map[string]string{"SRC": src}, InputSrcs: []string{src}, Nonce: "src"})
	r := offload(t, f, d, buildOpts{env: []string{"OFFLOAD_VERBOSE=1"}})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s status %d:\n%s", r.answer, r.status, r.messages)
	}
	if !strings.Contains(r.messages, ": add-to-store paths=1 ") || strings.Contains(r.messages, ": import-paths ") {
		t.Errorf("want the source sent by AddToStore and no bundle:\n%s", r.messages)
	}
	if !m.Store.Drv().Valid(src) {
		t.Errorf("the source is not on the machine at its path")
	}
	out, err := os.ReadFile(d.OutputPaths()[0])
	if err != nil || string(out) != "a source tree\n" {
		t.Errorf("output %q %v", out, err)
	}
}

// TestSigningHelperStartsDuringTheBuild: on the daemon path the machine's signing
// helper (a Guile start on a real machine, longer than a tiny build) is started by an
// export of the .drv on a second connection as soon as the .drv is there, so that it
// runs while the build does: the -v trace shows that export while the build still
// waits for the test's gate.
func TestSigningHelperStartsDuringTheBuild(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	gate := filepath.Join(t.TempDir(), "go")
	in := f.AddLocalItem("input-warm", map[string]string{"data": "warm\n"})
	d := f.MakeDrv(drv.Spec{
		Name:      "t-warm",
		Args:      []string{"-c", `while [ ! -e "$GATE" ]; do sleep 0.05; done; cat "$IN/data" > "$out"`},
		Env:       map[string]string{"GATE": gate, "IN": in},
		InputSrcs: []string{in},
	})
	h := startHook(t, f, buildOpts{env: []string{"OFFLOAD_PATH=daemon", "OFFLOAD_VERBOSE=1"}})
	if ans, err := h.Request(false, d.System, d.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("%q %v %q", ans, err, h.Messages())
	}
	if err := f.SendPaths(h, d); err != nil {
		t.Fatal(err)
	}
	traced := func(op string) bool {
		for _, l := range h.Messages() {
			if strings.HasPrefix(l, "+ daemon ") && strings.Contains(l, ": "+op+" ") {
				return true
			}
		}
		return false
	}
	waitUntil(t, "the build to start", func() bool {
		return traced("build-paths") || strings.Contains(strings.Join(h.Messages(), "\n"), "@ build-remote")
	})
	// The build waits for the gate: an export now is the early one.
	waitUntil(t, "an export of the .drv while the build runs", func() bool { return traced("export-path") })
	if traced("build-paths") {
		t.Fatal("the build ended before the test opened its gate")
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if st, sig, err := h.Wait(); err != nil || sig || st != 0 {
		t.Fatalf("status %d %v %v:\n%s", st, sig, err, strings.Join(h.Messages(), "\n"))
	}
}

// TestBigSourceGoesTheFasterWay: a source item bigger than a bulk bundle goes the way
// that was faster per byte to its machine, AddToStore or the bulk bundle, as placement
// learned it, and the upload adds to what is learned of that way. (Which way is tried
// first, by the round trip, is hook's TestBigSourceByAdd: a loaded host's round trip
// is no fixed figure.)
func TestBigSourceGoesTheFasterWay(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	id := loadMachine(t, f, m).ID()
	store := placement.Store{Dir: filepath.Join(f.State, "offload")}
	// learn replaces what was learned of the machine's uploads: 100 MiB in add and in
	// imp by each way.
	learn := func(add, imp time.Duration) {
		if err := os.Remove(statedir.Layout{Dir: store.Dir}.Learned(id)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := store.Record(id, placement.Offload{Streams: []placement.Stream{
			{Method: placement.StreamAdd, Bytes: 100 << 20, Send: add},
			{Method: placement.StreamImport, Bytes: 100 << 20, Send: imp},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	send := func(n int) string {
		name := fmt.Sprintf("t-big%d", n)
		src, err := f.Local.Drv().AddSource(name, map[string]string{"data": strings.Repeat(fmt.Sprintf("big source %d\n", n), 400_000)})
		if err != nil {
			t.Fatal(err)
		}
		d := f.MakeDrv(drv.Spec{Name: "t-uses-" + name, Args: []string{"-c", `head -c 13 "$SRC/data" > "$out"`},
			Env: map[string]string{"SRC": src}, InputSrcs: []string{src}, Nonce: name})
		// Every source item above 1 MiB is big here; these are about 5 MiB, above the
		// 4 MiB that placement learns from.
		r := offload(t, f, d, buildOpts{env: []string{"OFFLOAD_PATH=daemon", "OFFLOAD_VERBOSE=1", hook.BulkThresholdEnv + "=1048576"}})
		if r.answer != "accept" || r.status != 0 {
			t.Fatalf("answer %s status %d:\n%s", r.answer, r.status, r.messages)
		}
		if !m.Store.Drv().Valid(src) {
			t.Errorf("%s is not on the machine at its path", name)
		}
		return r.messages
	}
	samples := func(method string) int {
		h, err := store.Load(id)
		if err != nil {
			t.Fatal(err)
		}
		return len(h.Streams[method])
	}
	learn(time.Second, 10*time.Second)
	if msgs := send(1); !strings.Contains(msgs, "sending source ") || !strings.Contains(msgs, ": add-to-store paths=1 ") {
		t.Errorf("AddToStore learned faster, but the big source did not go by it:\n%s", msgs)
	}
	if n := samples(placement.StreamAdd); n != 2 {
		t.Errorf("%d AddToStore uploads learned, want 2 (the seeded one and this one)", n)
	}
	learn(10*time.Second, time.Second)
	if msgs := send(2); strings.Contains(msgs, ": add-to-store ") || !strings.Contains(msgs, "sending 1 store item") {
		t.Errorf("the bundle learned faster, but the big source did not go in it:\n%s", msgs)
	}
	if n := samples(placement.StreamImport); n != 2 {
		t.Errorf("%d bundle uploads learned, want 2 (the seeded one and this one)", n)
	}
}
