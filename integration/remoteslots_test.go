package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/farm"
	"offload/locking"
	"offload/sshexec/sshtest"
)

// A build machine shared by several hosts: each host is a hook with its own
// GUIX_STATE_DIRECTORY (its own local slots, queue, state and ssh connections), all
// reading the same machines file, against the farm's one machine.

// hostEnv is the environment of host i's hooks: host 0 is the farm's own state, the
// others have theirs.
func hostEnv(tb testing.TB, f *farm.Farm, i int) []string {
	tb.Helper()
	if i == 0 {
		return f.HookEnv()
	}
	dir := filepath.Join(f.Dir, "host"+strconv.Itoa(i), "state")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return append(f.HookEnv(), "GUIX_STATE_DIRECTORY="+dir)
}

// startHostHook starts a hook of host i as guix-daemon would.
func startHostHook(tb testing.TB, f *farm.Farm, i int) (*daemon.Hook, error) {
	return daemon.StartWith(context.Background(), f.HookArgv("x86_64-linux", 0, true, 0), hostEnv(tb, f, i), daemon.Options{})
}

// sharedOutcome is what sharedBuilds saw.
type sharedOutcome struct {
	failures []string
	maxConc  int // most builds running at once on the machine, from the builders' lines
	builds   int // builds whose start and end the builders wrote
	waited   int // builds that waited for one of the machine's own slots
	elapsed  time.Duration
}

// sharedBuilds asks for perHost builds of secs seconds on each of hosts hosts at once,
// each on its own hook, postponed requests asked again every 200 ms on the same hook
// as the daemon does, and counts from the builders' own start and end lines, in the
// order they were written, how many ran at once.
func sharedBuilds(tb testing.TB, f *farm.Farm, hosts, perHost, secs int) sharedOutcome {
	tb.Helper()
	events := filepath.Join(f.Dir, "events")
	type job struct {
		host int
		d    *drv.Derivation
	}
	var jobs []job
	for h := range hosts {
		hostEnv(tb, f, h) // its state directory, before the hooks start
		for i := range perHost {
			nonce := fmt.Sprintf("h%d-%d-%d", h, i, time.Now().UnixNano())
			jobs = append(jobs, job{h, f.MakeDrv(drv.Spec{
				Name: "t-shared",
				Args: []string{"-c", `echo "start $NONCE" >> "$EVENTS"; sleep ` + strconv.Itoa(secs) +
					`; echo "end $NONCE" >> "$EVENTS"; echo ok > "$out"`},
				Env:   map[string]string{"NONCE": nonce, "EVENTS": events},
				Nonce: nonce,
			})})
		}
	}
	var out sharedOutcome
	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(format string, args ...any) {
				mu.Lock()
				out.failures = append(out.failures, fmt.Sprintf("host %d, %s: ", j.host, j.d.Path)+fmt.Sprintf(format, args...))
				mu.Unlock()
			}
			h, err := startHostHook(tb, f, j.host)
			if err != nil {
				fail("%v", err)
				return
			}
			defer h.Kill()
			for {
				ans, err := f.Request(h, j.d)
				if err != nil {
					fail("request: %v", err)
					return
				}
				if ans == "accept" {
					break
				}
				if ans != "postpone" {
					fail("answer %s", ans)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err := f.SendPaths(h, j.d); err != nil {
				fail("%v", err)
			}
			if st, _, err := h.Wait(); err != nil || st != 0 {
				fail("hook exited %d (%v): %q", st, err, h.Messages())
			}
			if contains(h.Messages(), "by other hosts too; '"+j.d.Path+"' waits for one there") {
				mu.Lock()
				out.waited++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	out.elapsed = time.Since(t0)
	fh, err := os.Open(events)
	if err != nil {
		tb.Fatal(err)
	}
	defer fh.Close()
	cur := 0
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		switch w := strings.Fields(sc.Text()); {
		case len(w) != 2:
		case w[0] == "start":
			cur++
			out.maxConc = max(out.maxConc, cur)
		case w[0] == "end":
			cur--
			out.builds++
		}
	}
	return out
}

// TestSharedMachineKeepsItsLimit: two hosts, each with the machine at parallel-builds
// 2 in its machines file, ask for four builds each at once: every one succeeds, and
// the machine never runs more than two at once (each host alone would allow two, four
// together).
func TestSharedMachineKeepsItsLimit(t *testing.T) {
	sshtest.NeedTool(t, "flock")
	const parallel = 2
	f := farm.New(t, farm.Options{ParallelBuilds: parallel})
	writeMachines(f, nil)
	o := sharedBuilds(t, f, 2, 4, 2)
	if len(o.failures) > 0 {
		t.Fatalf("%d builds failed:\n%s", len(o.failures), strings.Join(o.failures, "\n"))
	}
	if o.builds != 8 {
		t.Errorf("the builders wrote %d ends, want 8", o.builds)
	}
	if o.maxConc > parallel {
		t.Errorf("the machine ran %d builds at once, more than its parallel-builds %d", o.maxConc, parallel)
	}
	t.Logf("at most %d at once; %d builds waited for a slot on the machine; %s", o.maxConc, o.waited, o.elapsed.Round(time.Millisecond))
	if held := remoteSlotsHeld(t, f.Machines[0], parallel); held != 0 {
		t.Errorf("%d of the machine's slots are still held after every build ended", held)
	}
}

// TestSharedMachineSlotOfDeadHost: a host whose hook is killed mid-build (SIGKILL on
// its process group, as the daemon does; its ssh session goes with it, though the
// shared ssh connection stays) frees the machine's slot, although its build would
// never end by itself: until then the other host is told the machine is full, then
// its build goes there.
func TestSharedMachineSlotOfDeadHost(t *testing.T) {
	sshtest.NeedTool(t, "flock")
	f := farm.New(t, farm.Options{ParallelBuilds: 1})
	writeMachines(f, nil)
	m := f.Machines[0]
	// A build that never ends by itself, writing a line every 0.2 s: only the end of
	// its session can free its slot. The stop file ends it when the test is over.
	stop := filepath.Join(f.Dir, "stop")
	t.Cleanup(func() { os.WriteFile(stop, nil, 0o644) })
	endless := f.MakeDrv(drv.Spec{
		Name:  "t-endless",
		Args:  []string{"-c", `while [ ! -e "$STOP" ]; do echo tick; sleep 0.2; done; echo stopped > "$out"`},
		Env:   map[string]string{"STOP": stop},
		Nonce: fmt.Sprint(time.Now().UnixNano()),
	})
	a, err := startHostHook(t, f, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Kill)
	if ans, err := f.Request(a, endless); err != nil || ans != "accept" {
		t.Fatalf("host 0: %q %v: %q", ans, err, a.Messages())
	}
	if err := f.SendPaths(a, endless); err != nil {
		t.Fatal(err)
	}
	slot := filepath.Join(m.SlotsDir(), "0")
	waitUntil(t, "host 0's build to hold the machine's slot", func() bool {
		_, reason, held, _ := locking.Holder(slot)
		return held && strings.HasSuffix(reason, endless.Path)
	})

	b, err := startHostHook(t, f, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Kill)
	d := okDrv(f, fmt.Sprint("dead-host-", time.Now().UnixNano()))
	if ans, err := f.Request(b, d); err != nil || ans != "postpone" {
		t.Fatalf("host 1 while host 0 builds: %q %v, want postpone: %q", ans, err, b.Messages())
	}
	if !contains(b.Messages(), "is full: 1 of 1 build slots taken on the machine, by other hosts too") {
		t.Errorf("host 1 was not told why: %q", b.Messages())
	}

	a.Kill()
	a.Wait()
	waitUntil(t, "the dead host's slot to free itself", func() bool {
		_, _, held, _ := locking.Holder(slot)
		return !held
	})
	var ans string
	waitUntil(t, "host 1's request to be accepted", func() bool {
		ans, err = f.Request(b, d)
		if err != nil || ans != "postpone" {
			return true
		}
		time.Sleep(200 * time.Millisecond)
		return false
	})
	if err != nil || ans != "accept" {
		t.Fatalf("host 1 after host 0 died: %q %v: %q", ans, err, b.Messages())
	}
	if err := f.SendPaths(b, d); err != nil {
		t.Fatal(err)
	}
	if st, _, err := b.Wait(); err != nil || st != 0 {
		t.Fatalf("host 1's build: exit %d (%v): %q", st, err, b.Messages())
	}
}

// remoteSlotsHeld counts the machine's own slots 0 .. n-1 that someone holds.
func remoteSlotsHeld(tb testing.TB, m *farm.Machine, n int) int {
	tb.Helper()
	held := 0
	for i := range n {
		if _, _, h, err := locking.Holder(filepath.Join(m.SlotsDir(), strconv.Itoa(i))); err != nil {
			tb.Fatal(err)
		} else if h {
			held++
		}
	}
	return held
}

// waitUntil waits for cond, failing the test after a bound generous for a loaded host.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	if !waitFor(2*time.Minute, cond) {
		tb.Fatalf("gave up waiting for %s", what)
	}
}

// TestSlotTakenWhileProbing: on the daemon path, with one machine, the hook takes the
// machine's own build slot while it probes the machine, before its accept, rather than
// after the daemon sent the inputs: the slot is held before the hook has read them.
// A machine that is not chosen after all (here: overloaded) gets its slot back, and the
// shell that probed it and took the slot ends.
func TestSlotTakenWhileProbing(t *testing.T) {
	sshtest.NeedTool(t, "flock")
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	// A first offload finds that the machine takes the daemon path, and remembers it.
	if r := offload(t, f, okDrv(f, "first"), buildOpts{}); r.status != 0 {
		t.Fatalf("first offload: %d\n%s", r.status, r.messages)
	}
	d := okDrv(f, "second")
	h := startHook(t, f, buildOpts{})
	if ans, err := h.Request(false, d.System, d.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("%q %v %q", ans, err, h.Messages())
	}
	// The inputs and outputs lines are not sent yet: the hook cannot have started the
	// offload.
	waitUntil(t, "the machine's slot to be held before the inputs were sent", func() bool { return remoteSlotsHeld(t, m, 1) == 1 })
	if err := f.SendPaths(h, d); err != nil {
		t.Fatal(err)
	}
	if st, sig, err := h.Wait(); err != nil || sig || st != 0 {
		t.Fatalf("status %d %v %v:\n%s", st, sig, err, strings.Join(h.Messages(), "\n"))
	}
	if held := remoteSlotsHeld(t, m, 1); held != 0 {
		t.Errorf("the machine's slot is still held after the build")
	}
	// Overloaded whatever its load: the request is postponed, and the slot taken while
	// probing is given back: while the hook lives on, waiting for the daemon's next
	// request, every session it opened ends (sshd logs each start and close).
	f.WriteMachinesFile(func(*farm.Machine) string { return "(overload-threshold 0.0)" })
	// No cached probe: the probe and the slot share a session, which must end.
	if err := os.Remove(filepath.Join(f.State, "offload", m.StateKey()+".state")); err != nil {
		t.Fatal(err)
	}
	d3 := okDrv(f, "third")
	before := strings.Count(m.Server.Log(), "Starting session:")
	h3 := startHook(t, f, buildOpts{})
	if ans, err := h3.Request(false, d3.System, d3.Path, nil); err != nil || ans != "postpone" {
		t.Fatalf("%q %v, want postpone for an overloaded machine: %q", ans, err, h3.Messages())
	}
	// Within a bound shorter than the test hook's own life (2 minutes), whose end
	// would close them anyway.
	if !waitFor(time.Minute, func() bool {
		log := m.Server.Log()
		started := strings.Count(log, "Starting session:")
		return started > before && strings.Count(log, "Close session:") == started
	}) {
		t.Fatalf("a session of the postponed request is still open while the hook lives")
	}
	if held := remoteSlotsHeld(t, m, 1); held != 0 {
		t.Errorf("the slot taken for a postponed build is still held")
	}
	h3.CloseStdin()
	h3.Wait()
}

// TestOneShellOnTheChosenMachine: on the daemon path, with two candidate machines and no
// cached probe, each is probed by one shell, and the chosen machine's probe shell also
// takes its build slot (after the choice): the offload opens no second shell there,
// and the machine not chosen gets no slot and its probe's session ends. Without the
// gate, the chosen machine sees two sessions (probe, then slot).
func TestOneShellOnTheChosenMachine(t *testing.T) {
	sshtest.NeedTool(t, "flock")
	f := farm.New(t, farm.Options{Machines: 2})
	writeMachines(f, nil)
	d := okDrv(f, "gated")
	r := offload(t, f, d, buildOpts{env: []string{"OFFLOAD_PATH=daemon"}})
	if r.status != 0 {
		t.Fatalf("offload: %d\n%s", r.status, r.messages)
	}
	total := 0
	for i, m := range f.Machines {
		log := m.Server.Log()
		started := strings.Count(log, "Starting session:")
		total += started
		// sshd logs a session's close just after our ssh has seen it end.
		waitUntil(t, fmt.Sprintf("machine %d's sessions to end", i), func() bool {
			return strings.Count(m.Server.Log(), "Close session:") == started
		})
		if held := remoteSlotsHeld(t, m, 1); held != 0 {
			t.Errorf("machine %d: its slot is still held after the offload", i)
		}
	}
	if total != 2 {
		t.Errorf("%d ssh sessions on the two machines, want 2 (one probe each; the chosen one's also took the slot)", total)
	}
}

// TestSlotFreeWhileOutputsComeBack: on the daemon path the machine's build slot is
// given back when the build ends, not once its outputs are back here: while the
// machine's daemon holds the output's export (its hold-export mode), the slot is
// already free for the next build, ours or another host's.
func TestSlotFreeWhileOutputsComeBack(t *testing.T) {
	sshtest.NeedTool(t, "flock")
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	gate := filepath.Join(t.TempDir(), "go")
	m.SetDaemonHostile(t, "hold-export "+gate)
	d := okDrv(f, "free-slot")
	h := startHook(t, f, buildOpts{env: []string{"OFFLOAD_PATH=daemon"}})
	if ans, err := h.Request(false, d.System, d.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("%q %v %q", ans, err, h.Messages())
	}
	if err := f.SendPaths(h, d); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the output's export to start", func() bool {
		_, err := os.Stat(gate + ".waiting")
		return err == nil
	})
	// Held until the test opens the gate: a slot let go only after the fetch never
	// frees here (within a bound shorter than the test hook's own life, whose end
	// would free it).
	if !waitFor(time.Minute, func() bool { return remoteSlotsHeld(t, m, 1) == 0 }) {
		t.Fatal("the machine's slot is still held while the output comes back")
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if st, sig, err := h.Wait(); err != nil || sig || st != 0 {
		t.Fatalf("status %d %v %v:\n%s", st, sig, err, strings.Join(h.Messages(), "\n"))
	}
}
