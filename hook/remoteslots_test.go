package hook

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"offload/machines"
	"offload/sshexec/sshtest"
)

// holdFlock takes an exclusive flock on file (created if need be) with content, as
// another host's session would, until the test ends or the returned func is called.
func holdFlock(t *testing.T, file, content string) func() {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return func() { f.Close() }
}

// flockHeld tells whether someone holds an flock on file.
func flockHeld(t *testing.T, file string) bool {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	return false
}

// slotCheckGuix wraps the fake guix so that `guix build` records, in $T/slotstate,
// whether the machine's slot $T/slots/0 is held while it builds.
func slotCheckGuix(t *testing.T, T string) {
	t.Helper()
	bin := filepath.Join(T, "bin")
	os.MkdirAll(bin, 0o755)
	writeScript(t, bin, "guix-real", fakeGuixScript)
	writeScript(t, bin, "guix", `if [ "$1" = build ] && [ "$2" = -r ]; then
	if (exec 8<"$T/slots/0" && flock -n 8) 2>/dev/null; then echo free; else echo "held: $(cat "$T/slots/0")"; fi >> "$T/slotstate"
fi
exec "$T/bin/guix-real" "$@"`)
}

// TestSessionScriptRemoteSlot: the build holds one of the machine's own slots, which
// says who holds it, and frees it when the build ends.
func TestSessionScriptRemoteSlot(t *testing.T) {
	sshtest.NeedTool(t, "flock")
	for _, shell := range shells(t) {
		t.Run(filepath.Base(shell[0]), func(t *testing.T) {
			T := t.TempDir()
			drv := filepath.Join(T, "x.drv")
			os.WriteFile(drv, []byte("drv"), 0o644)
			r := startScriptWith(t, shell, T, slotCheckGuix, nil, drv)
			r.send(drv + "\n")
			r.linesUntil(lineMissingEnd)
			r.send("none skip\n")
			r.stdin.Close()
			if got := slices.DeleteFunc(r.linesUntil(lineBuilt), func(l string) bool { return l == lineAlive }); !reflect.DeepEqual(got, []string{lineImported, lineBuilding, lineBuilt}) {
				t.Errorf("after the header: %q", got)
			}
			if _, st := r.end(); st != 0 {
				t.Fatalf("exit %d: %q", st, r.stderr.String())
			}
			if got, want := readLog(t, filepath.Join(T, "slotstate")), "held: thishost 42 "+drv+"\n"; got != want {
				t.Errorf("during the build the slot was %q, want %q", got, want)
			}
			if flockHeld(t, filepath.Join(T, "slots", "0")) {
				t.Error("the slot is still held after the session")
			}
		})
	}
}

// TestSessionScriptWaitsForSlot: with the machine's only slot held by another host,
// the script says it waits (before the build: nothing built yet), leaves that host's
// slot file alone, and builds as soon as the slot is free.
func TestSessionScriptWaitsForSlot(t *testing.T) {
	sshtest.NeedTool(t, "flock")
	T := t.TempDir()
	drv := filepath.Join(T, "x.drv")
	os.WriteFile(drv, []byte("drv"), 0o644)
	slot := filepath.Join(T, "slots", "0")
	other := "otherhost 7 /gnu/store/other.drv\n"
	release := holdFlock(t, slot, other)
	r := startScriptWith(t, shells(t)[0], T, slotCheckGuix, nil, drv)
	r.send(drv + "\n")
	r.linesUntil(lineMissingEnd)
	r.send("none skip\n")
	r.stdin.Close()
	if got := r.linesUntil(lineWaiting); !reflect.DeepEqual(got, []string{lineImported, lineWaiting}) {
		t.Fatalf("after the header: %q", got)
	}
	if log := readLog(t, filepath.Join(T, "log")); strings.Contains(log, "build -r") {
		t.Errorf("built while the slot was taken:\n%s", log)
	}
	if b, _ := os.ReadFile(slot); string(b) != other {
		t.Errorf("the other host's slot file now says %q", b)
	}
	release()
	got := slices.DeleteFunc(r.linesUntil(lineBuilt), func(l string) bool { return l == lineAlive })
	waits := 0
	for _, l := range got {
		if l == lineWaiting {
			waits++
		}
	}
	if len(got) < 2 || got[len(got)-2] != lineBuilding || len(got) != waits+2 {
		t.Errorf("after the wait: %q", got)
	}
	if _, st := r.end(); st != 0 {
		t.Fatalf("exit %d: %q", st, r.stderr.String())
	}
	if got, want := readLog(t, filepath.Join(T, "slotstate")), "held: thishost 42 "+drv+"\n"; got != want {
		t.Errorf("during the build the slot was %q, want %q", got, want)
	}
}

// TestSessionScriptNoFlock: a machine without flock builds without a shared slot,
// and says so once.
func TestSessionScriptNoFlock(t *testing.T) {
	T := t.TempDir()
	// A PATH with what the script and the fake guix use, but no flock.
	tools := filepath.Join(T, "tools")
	os.MkdirAll(tools, 0o755)
	for _, p := range []string{"mkdir", "rm", "ln", "cat", "ls", "sort", "tr", "sleep"} {
		real := sshtest.NeedTool(t, p)
		os.Symlink(real, filepath.Join(tools, p))
	}
	drv := filepath.Join(T, "x.drv")
	os.WriteFile(drv, []byte("drv"), 0o644)
	r := startScriptWith(t, shells(t)[0], T, nil, []string{"PATH=" + filepath.Join(T, "bin") + ":" + tools}, drv)
	r.send(drv + "\n")
	r.linesUntil(lineMissingEnd)
	r.send("none skip\n")
	r.stdin.Close()
	r.linesUntil(lineBuilt)
	if _, st := r.end(); st != 0 {
		t.Fatalf("exit %d: %q", st, r.stderr.String())
	}
	if n := strings.Count(r.stderr.String(), "no flock(1) on this machine"); n != 1 {
		t.Errorf("said %d times that flock is missing: %q", n, r.stderr.String())
	}
}

// TestFactsRemoteSlots: the probe counts the machine's own slots that someone holds,
// among the first SLOTS or, without SLOTS, all; in full mode it says who holds each.
func TestFactsRemoteSlots(t *testing.T) {
	sshtest.NeedTool(t, "flock")
	home := t.TempDir()
	sd := filepath.Join(home, rootsDir, "slots")
	holdFlock(t, filepath.Join(sd, "0"), "laptop 12 /gnu/store/a.drv\n")
	holdFlock(t, filepath.Join(sd, "3"), "desktop 34 /gnu/store/b.drv\n")
	os.WriteFile(filepath.Join(sd, "1"), []byte("laptop 5 /gnu/store/done.drv\n"), 0o644) // freed
	probe := func(mode, slots string, env ...string) Facts {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", factsScript, "sh", home, mode, slots)
		cmd.Dir, cmd.Env = home, append(os.Environ(), env...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		f, err := ParseFacts(string(out))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := probe("basic", "2"); f.Slots == nil || f.Slots.Held != 1 || len(f.Slots.Holders) != 0 {
		t.Errorf("2 slots: %+v, want 1 held, no holders in basic mode", f.Slots)
	}
	if f := probe("basic", "4"); f.Slots == nil || f.Slots.Held != 2 {
		t.Errorf("4 slots: %+v, want 2 held", f.Slots)
	}
	want := &RemoteSlots{Held: 2, Holders: []RemoteSlot{{Slot: 0, Host: "laptop", PID: 12, Derivation: "/gnu/store/a.drv"}, {Slot: 3, Host: "desktop", PID: 34, Derivation: "/gnu/store/b.drv"}}}
	if f := probe("full", ""); !reflect.DeepEqual(f.Slots, want) {
		t.Errorf("full, every slot: %+v, want %+v", f.Slots, want)
	}
	if f := probe("full", "", slotsDirEnv+"="+t.TempDir()); f.Slots == nil || f.Slots.Held != 0 {
		t.Errorf("an empty %s: %+v", slotsDirEnv, f.Slots)
	}
}

func TestParseFactsRemoteSlots(t *testing.T) {
	base := "cores 4\nload 0.5 0 0 1/1 1\n"
	f, err := ParseFacts(base + "rslot 1 laptop 12 /gnu/store/a.drv\nrslot 2\nrslot x y\nrslots 2\ntime 1700000000.250000000\n")
	if err != nil {
		t.Fatal(err)
	}
	want := &RemoteSlots{Held: 2, Holders: []RemoteSlot{{Slot: 1, Host: "laptop", PID: 12, Derivation: "/gnu/store/a.drv"}, {Slot: 2}}}
	if !reflect.DeepEqual(f.Slots, want) {
		t.Errorf("got %+v, want %+v", f.Slots, want)
	}
	// No flock on the machine: nothing said, nothing known.
	if f, err := ParseFacts(base + "time 1700000000.250000000\n"); err != nil || f.Slots != nil {
		t.Errorf("without rslots: %+v, %v", f.Slots, err)
	}
}

// startScriptWith runs sessionScript for drv, with no limits and no outputs, after
// setup (nil: none) changed the fake guix.
func startScriptWith(t *testing.T, shell []string, T string, setup func(*testing.T, string), env []string, drv string) *scriptRun {
	t.Helper()
	return startScriptSetup(t, shell, T, setup, env, drv, "", "")
}

// TestOffloadSessionWaitsForSlot: the hook says once that the build waits for one of
// the machine's own slots, and the build goes on when the other host frees it.
func TestOffloadSessionWaitsForSlot(t *testing.T) {
	sshtest.NeedTool(t, "flock")
	f := newSessionFixture(t)
	release := holdFlock(t, filepath.Join(os.Getenv(slotsDirEnv), "0"), "otherhost 7 /gnu/store/other.drv\n")
	done := make(chan error, 1)
	go func() { done <- f.run() }()
	const waits = "are taken on the machine, by other hosts too; '"
	for !strings.Contains(f.out.String(), waits) {
		select {
		case err := <-done:
			t.Fatalf("the offload ended (%v) without waiting for the machine's slot:\n%s", err, f.out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if strings.Contains(f.out.String(), "@ build-remote") {
		t.Errorf("the build started while the machine's slot was taken:\n%s", f.out.String())
	}
	release()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("offload: %v\n%s", err, f.out.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("the offload did not end after the slot was freed:\n%s", f.out.String())
	}
	if n := strings.Count(f.out.String(), waits); n != 1 {
		t.Errorf("said %d times that it waits:\n%s", n, f.out.String())
	}
	if b, err := os.ReadFile(f.output); err != nil || string(b) != f.outputContent {
		t.Errorf("output %q, %v", b, err)
	}
}

// TestSlotHoldScript: the daemon path's slot holder takes the slot, says so, samples the
// machine's available memory while it holds it, and frees it when its stdin ends; the
// sampler does not keep the slot's descriptor.
func TestSlotHoldScript(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("no flock(1)")
	}
	if _, err := os.Stat("/proc/meminfo"); err != nil {
		t.Skip("no /proc/meminfo")
	}
	d := t.TempDir()
	// A sampler's sleep that never ends by itself: the session must end without it.
	bin := filepath.Join(d, "bin")
	os.MkdirAll(bin, 0o755)
	writeScript(t, bin, "sleep", `case $1 in 1) exec /bin/sleep 1000 ;; *) exec /bin/sleep "$@" ;; esac`)
	cmd := exec.Command("sh", "-c", slotHoldScript, "sh", d, "1", "host 1", "/gnu/store/x.drv")
	cmd.Env = append(os.Environ(), slotsDirEnv+"="+filepath.Join(d, "slots"), "PATH="+bin+":"+os.Getenv("PATH"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		buf := make([]byte, 4096)
		var rest string
		for {
			n, err := stdout.Read(buf)
			rest += string(buf[:n])
			for {
				l, r, ok := strings.Cut(rest, "\n")
				if !ok {
					break
				}
				lines <- l
				rest = r
			}
			if err != nil {
				return
			}
		}
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(30 * time.Second): // generous: a loaded machine
			t.Fatal("the script said nothing more")
			return ""
		}
	}
	if l := next(); l != lineBuilding {
		t.Fatalf("first line %q, want %q", l, lineBuilding)
	}
	slot := filepath.Join(d, "slots", "0")
	if !flockHeld(t, slot) {
		t.Fatal("slot not held while building")
	}
	var samples memSamples
	for samples.n < 1 {
		l := next()
		v, ok := strings.CutPrefix(l, lineMem+" ")
		kb, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil || kb <= 0 {
			t.Fatalf("line %q, want %q and a number of kB", l, lineMem)
		}
		samples.add(kb)
	}
	stdin.Close()
	// The session ends when the script and whatever holds its stdout are gone.
	ended := make(chan struct{})
	go func() {
		for range lines {
		}
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the script's stdout is still open after its stdin ended (the sampler's sleep holds it?)")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("script: %v", err)
	}
	if flockHeld(t, slot) {
		t.Error("slot still held after the script ended (the sampler kept it?)")
	}
}

func TestMemSamplesPeak(t *testing.T) {
	var m memSamples
	if m.peakBytes() != 0 {
		t.Error("peak without samples")
	}
	m.add(1000)
	if m.peakBytes() != 0 {
		t.Error("peak from one sample")
	}
	for _, kb := range []int64{900, 400, 700, 1200} {
		m.add(kb)
	}
	if got := m.peakBytes(); got != 600*1024 {
		t.Errorf("peak %d, want 600 KiB: the fall from the first sample to the lowest", got)
	}
	var up memSamples
	up.add(1000)
	up.add(2000)
	if up.peakBytes() != 0 {
		t.Error("memory that only grew gives a peak")
	}
}

// startProbeScript runs script (probeHoldScript or probeGateScript) as the machine
// would, for a machine of nslots slots whose slot files are in slots, and reads its
// facts up to lineFactsEnd. wait reads the rest of its output and waits for it.
func startProbeScript(t *testing.T, script, slots, nslots string) (stdin io.WriteCloser, sc *bufio.Scanner, p *machines.Probe, wait func()) {
	t.Helper()
	d := t.TempDir()
	cmd := exec.Command("sh", "-c", script, "sh", d, d, nslots, "host 1", "/gnu/store/x.drv")
	cmd.Env = append(os.Environ(), slotsDirEnv+"="+slots)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		if cmd.Process != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	stdin, _ = cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc = bufio.NewScanner(stdout)
	var facts strings.Builder
	for sc.Scan() && sc.Text() != lineFactsEnd {
		facts.WriteString(sc.Text() + "\n")
	}
	p, err := probeOf(facts.String())
	if err != nil {
		t.Fatalf("facts %q: %v", facts.String(), err)
	}
	return stdin, sc, p, func() {
		for sc.Scan() {
		}
		cmd.Wait()
	}
}

// TestProbeHoldScript: one shell gives a probe's facts, its slots counted before one is
// taken for us, then takes and holds that slot like slotHoldScript.
func TestProbeHoldScript(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("no flock(1)")
	}
	slots := filepath.Join(t.TempDir(), "slots")
	holdFlock(t, filepath.Join(slots, "0"), "other 1 /gnu/store/y.drv\n") // another host's build
	stdin, sc, p, wait := startProbeScript(t, probeHoldScript, slots, "2")
	if p.RemoteSlotsHeld != 1 {
		t.Errorf("%d slots held in the facts, want 1 (the other host's, counted before ours is taken)", p.RemoteSlotsHeld)
	}
	if !sc.Scan() || sc.Text() != lineBuilding {
		t.Fatalf("after the facts: %q, want %q", sc.Text(), lineBuilding)
	}
	if !flockHeld(t, filepath.Join(slots, "1")) {
		t.Error("the free slot is not held")
	}
	stdin.Close()
	wait()
	if flockHeld(t, filepath.Join(slots, "1")) {
		t.Error("the slot is still held after the script ended")
	}
}

// TestProbeGateScript: with several candidate machines, a probe's shell gives its facts
// and then waits: it takes the slot only when told lineHold, and ends without taking
// one when its stdin ends (another machine was chosen).
func TestProbeGateScript(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("no flock(1)")
	}
	t.Run("chosen", func(t *testing.T) {
		slots := filepath.Join(t.TempDir(), "slots")
		stdin, sc, _, wait := startProbeScript(t, probeGateScript, slots, "1")
		if _, err := os.Stat(filepath.Join(slots, "0")); err == nil && flockHeld(t, filepath.Join(slots, "0")) {
			t.Fatal("the slot is held before the machine was chosen")
		}
		io.WriteString(stdin, lineHold+"\n")
		if !sc.Scan() || sc.Text() != lineBuilding {
			t.Fatalf("after %q: %q, want %q", lineHold, sc.Text(), lineBuilding)
		}
		if !flockHeld(t, filepath.Join(slots, "0")) {
			t.Error("the slot is not held once the machine was chosen")
		}
		stdin.Close()
		wait()
		if flockHeld(t, filepath.Join(slots, "0")) {
			t.Error("the slot is still held after the script ended")
		}
	})
	t.Run("not chosen", func(t *testing.T) {
		slots := filepath.Join(t.TempDir(), "slots")
		stdin, sc, _, wait := startProbeScript(t, probeGateScript, slots, "1")
		stdin.Close()
		wait()
		if sc.Text() != "" {
			t.Errorf("said %q after its stdin ended", sc.Text())
		}
		if _, err := os.Stat(filepath.Join(slots, "0")); err == nil {
			t.Error("a machine that was not chosen had its slot taken")
		}
	})
}

// TestSlotLearnsPeak: the samples the slot's shell says after lineBuilding are what the
// slot's peakBytes gives once the session ended (what the offload learns as the build's
// peak); the samples' fall, not their last value.
func TestSlotLearnsPeak(t *testing.T) {
	s := &remoteSlot{lines: make(chan string, 16), done: make(chan error, 1), stdin: nopWriteCloser{}, cancel: func() {}}
	s.lines <- lineBuilding
	for _, kb := range []string{"5000", "4000", "4500", "junk", "3000", "4800"} {
		s.lines <- lineMem + " " + kb
	}
	close(s.lines)
	h := &Hook{Out: io.Discard}
	if err := s.wait(context.Background(), h, &machines.Machine{Name: "m"}, "/gnu/store/x.drv"); err != nil {
		t.Fatal(err)
	}
	s.done <- nil
	s.release()
	if got := s.peakBytes(); got != 2000*1024 {
		t.Errorf("peak %d bytes, want %d (5000 kB first, 3000 kB lowest)", got, 2000*1024)
	}
	none := &remoteSlot{}
	if none.peakBytes() != 0 {
		t.Error("a slot that never said lineBuilding has a peak")
	}
}

type nopWriteCloser struct{}

func (nopWriteCloser) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriteCloser) Close() error                { return nil }
