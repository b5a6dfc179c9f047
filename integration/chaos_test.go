package integration

// Fault drills for issue 7 (`make chaos`, scripts/chaos.sh). They run only with
// OFFLOAD_CHAOS=1; OFFLOAD_CHAOS_SHORT=1 runs each drill once or small. Every drill logs
// lines starting "drill:" saying what it checked, which scripts/chaos.sh prints.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/farm"
	"offload/locking"
	"offload/machines"
	"offload/storeio"
)

func needChaos(t *testing.T) {
	t.Helper()
	if os.Getenv("OFFLOAD_CHAOS") != "1" {
		t.Skip("fault drill: set OFFLOAD_CHAOS=1 (make chaos)")
	}
}

func chaosShort() bool { return os.Getenv("OFFLOAD_CHAOS_SHORT") == "1" }

func drill(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("drill: "+format, args...)
}

// waitFor polls cond every 10 ms for at most limit (a bound on a wait, not a timing
// check); it reports whether cond became true.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ourProcesses lists the processes (other than this test) whose command line
// mentions one of dirs, as "pid: cmdline".
func ourProcesses(dirs ...string) []string {
	var found []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		if strings.Contains(cmd, "/workerd -listen ") {
			continue // the farm's own daemons, which run until the test ends
		}
		for _, d := range dirs {
			if strings.Contains(cmd, d) {
				found = append(found, fmt.Sprintf("%d: %s", pid, cmd))
				break
			}
		}
	}
	return found
}

// tempEntries lists the store's importer temporaries.
func tempEntries(t *testing.T, f *farm.Farm) []string {
	t.Helper()
	var out []string
	for _, n := range storeEntries(t, f) {
		if strings.HasPrefix(n, storeio.TempPrefix) {
			out = append(out, n)
		}
	}
	return out
}

// remoteRootsOf lists what is left in the remote user's roots directory for drv (the
// farm's machines log in as this user, so it is this user's home).
func remoteRootsOf(drvPath string) []string {
	home, _ := os.UserHomeDir()
	dir := filepath.Join(home, ".cache/guix/offload")
	ents, _ := os.ReadDir(dir)
	key := strings.TrimSuffix(filepath.Base(drvPath), ".drv")
	var left []string
	for _, e := range ents {
		if strings.Contains(e.Name(), key) {
			left = append(left, filepath.Join(dir, e.Name()))
		}
	}
	return left
}

func slotFree(t *testing.T, f *farm.Farm, m *farm.Machine, n int) bool {
	t.Helper()
	l, _, err := locking.AcquireSlot(slotDir(f, m), n, "chaos: checking the slot")
	if err != nil {
		t.Fatal(err)
	}
	if l == nil {
		return false
	}
	l.Release()
	return true
}

// bigOutDrv writes an output of size random bytes, so that downloading it takes a while.
func bigOutDrv(f *farm.Farm, nonce string, size int) *drv.Derivation {
	return f.MakeDrv(drv.Spec{
		Name:  "t-bigout",
		Args:  []string{"-c", `echo "t-bigout start $NONCE"; head -c ` + strconv.Itoa(size) + ` /dev/urandom > "$out"`},
		Env:   map[string]string{"NONCE": nonce},
		Nonce: nonce,
	})
}

// checkAftermath checks what every failed offload must leave: a transient status, no
// new entry in the local store, the slot free, no process of ours.
func checkAftermath(t *testing.T, f *farm.Farm, m *farm.Machine, d *drv.Derivation, h *daemon.Hook, before []string) {
	t.Helper()
	st, sig, err := h.Wait()
	if err != nil || sig || st != 1 {
		t.Errorf("hook status %d signaled %v (%v), want the transient 1; messages:\n%s", st, sig, err, strings.Join(h.Messages(), "\n"))
	} else {
		drill(t, "hook exited with the transient status 1")
	}
	after := storeEntries(t, f)
	if strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("local store changed: before %q, after %q", before, after)
	} else {
		drill(t, "local store unchanged (%d entries, no %s*)", len(after), storeio.TempPrefix)
	}
	if slotFree(t, f, m, 1) {
		drill(t, "build slot free")
	} else {
		t.Errorf("build slot still held")
	}
	dirs := []string{f.Dir, m.Server.Dir}
	if left := ourProcesses(dirs...); !waitFor(10*time.Second, func() bool { left = ourProcesses(dirs...); return len(left) == 0 }) {
		t.Errorf("processes of ours left:\n%s", strings.Join(left, "\n"))
	} else {
		drill(t, "no ssh or guix process mentioning the farm left")
	}
	if left := remoteRootsOf(d.Path); len(left) > 0 {
		drill(t, "remote GC roots left (the machine was unreachable when the hook tried to remove them): %q", left)
		for _, p := range left {
			os.Remove(p)
		}
	} else {
		drill(t, "no remote GC root left for the derivation")
	}
}

// TestChaosSSHDKilled kills the machine's sshd (and every session under it) during the
// upload, during the build and during the download.
func TestChaosSSHDKilled(t *testing.T) {
	needChaos(t)
	phases := []struct {
		name string
		make func(f *farm.Farm) *drv.Derivation
		when func(h *daemon.Hook) bool
	}{
		{"upload", func(f *farm.Farm) *drv.Derivation {
			in := addRandomItem(t, f, "chaos-upload", 7, 0, 300_000_000)
			return f.MakeDrv(drv.Spec{Name: "t-up", Args: []string{"-c", `echo "$IN" > "$out"`},
				Env: map[string]string{"IN": in}, InputSrcs: []string{in}, Nonce: "up"})
		}, func(h *daemon.Hook) bool { return contains(h.Messages(), "sending ") }},
		{"build", func(f *farm.Farm) *drv.Derivation { return sleepDrv(f, "chaos-build", 30) },
			func(h *daemon.Hook) bool { return strings.Contains(string(h.Log()), "t-sleep start") }},
		{"download", func(f *farm.Farm) *drv.Derivation { return bigOutDrv(f, "chaos-down", 400_000_000) },
			func(h *daemon.Hook) bool { return contains(h.Messages(), "retrieving ") }},
	}
	for _, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			f := farm.New(t, farm.Options{})
			writeMachines(f, nil)
			m := f.Machines[0]
			d := ph.make(f)
			before := storeEntries(t, f)
			// One attempt: what a failure leaves when no retry follows.
			h := startHook(t, f, buildOpts{env: []string{"OFFLOAD_ATTEMPTS=1"}})
			if ans, err := h.Request(false, d.System, d.Path, nil); err != nil || ans != "accept" {
				t.Fatalf("%q %v %q", ans, err, h.Messages())
			}
			if err := f.SendPaths(h, d); err != nil {
				t.Fatal(err)
			}
			if !waitFor(60*time.Second, func() bool { return ph.when(h) }) {
				t.Fatalf("the %s never started: %q", ph.name, h.Messages())
			}
			m.Server.Stop()
			drill(t, "sshd and its sessions killed during the %s (OFFLOAD_ATTEMPTS=1)", ph.name)
			checkAftermath(t, f, m, d, h, before)
		})
	}
}

// TestChaosHookKilled kills the hook's process group with SIGKILL at random points of
// an offload; the next hook must get the slot at once and succeed.
func TestChaosHookKilled(t *testing.T) {
	needChaos(t)
	runs := 20
	if chaosShort() {
		runs = 3
	}
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	// How long one offload takes, to spread the kills over it.
	t0 := time.Now()
	if r := offload(t, f, bigOutDrv(f, "calibrate", 50_000_000), buildOpts{}); r.status != 0 {
		t.Fatalf("calibration offload failed: %d %s", r.status, r.messages)
	}
	span := time.Since(t0)
	drill(t, "one offload with a 50 MB output takes %s here; kills fall in [0, %s]", span.Round(time.Millisecond), span.Round(time.Millisecond))
	rnd := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
	staleSeen, rootsLeft, procsLeft := 0, 0, 0
	for i := range runs {
		d := bigOutDrv(f, fmt.Sprintf("kill%d", i), 50_000_000)
		h := startHook(t, f, buildOpts{})
		delay := time.Duration(rnd.Int64N(int64(span)))
		start := time.Now()
		ans, err := h.Request(false, d.System, d.Path, nil)
		if err != nil || ans != "accept" {
			t.Fatalf("run %d: %q %v %q", i, ans, err, h.Messages())
		}
		if err := f.SendPaths(h, d); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(start.Add(delay)))
		h.Kill()
		h.Wait()
		msgs := h.Messages()
		phase := "before upload"
		for _, p := range []struct{ sub, name string }{{"sending ", "upload"}, {"@ build-remote", "build"}, {"retrieving ", "download"}, {"done with", "done"}} {
			if contains(msgs, p.sub) {
				phase = p.name
			}
		}
		stale := tempEntries(t, f)
		if len(stale) > 0 {
			staleSeen++
		}
		// What a SIGKILL cannot clean up itself: the remote GC roots (removed at the
		// end of the offload, which never comes; the next hook of this host removes
		// them) and remote commands still running.
		killedRoots := remoteRootsOf(d.Path)
		if len(killedRoots) > 0 {
			rootsLeft++
		}
		if !waitFor(5*time.Second, func() bool { return len(ourProcesses(d.Path)) == 0 }) {
			procsLeft++
			drill(t, "run %d: remote processes still running 5 s after the kill: %q", i, ourProcesses(d.Path))
		}
		// The next hook: the slot at once (parallel-builds 1: a held slot would postpone).
		next := okDrv(f, fmt.Sprintf("after%d", i))
		r := offload(t, f, next, buildOpts{})
		if r.answer != "accept" || r.status != 0 {
			t.Fatalf("run %d (killed after %s, in %s): next offload %s %d:\n%s", i, delay, phase, r.answer, r.status, r.messages)
		}
		if left := tempEntries(t, f); len(left) > 0 {
			t.Errorf("run %d: temporaries still in the store after the next offload: %q", i, left)
		}
		if left := remoteRootsOf(d.Path); len(left) > 0 {
			t.Errorf("run %d: the killed hook's remote GC roots are still there after the next offload: %q", i, left)
			for _, p := range left {
				os.Remove(p)
			}
		}
		drill(t, "run %d: killed after %s (in %s), %d temporaries right after the kill; next hook accepted at once and succeeded, no temporary left", i, delay.Round(time.Millisecond), phase, len(stale))
	}
	if !slotFree(t, f, m, 1) {
		t.Errorf("slot held after the runs")
	}
	drill(t, "%d of %d kills left an importer temporary in the store until the next hook cleaned it", staleSeen, runs)
	drill(t, "%d of %d kills left remote GC roots for the killed build, each removed by the next hook; %d left remote processes running for more than 5 s", rootsLeft, runs, procsLeft)
}

// TestChaosSilentMachine: a machine that accepts TCP connections and never answers.
func TestChaosSilentMachine(t *testing.T) {
	needChaos(t)
	f := farm.New(t, farm.Options{})
	m := f.Machines[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	accepted := func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }
	port := ln.Addr().(*net.TCPAddr).Port
	writeMachinesText(t, f, []string{machineEntry(m, port, 1, "")})
	d := okDrv(f, "silent")
	const connectTimeout = 5 * time.Second // sshexec.DefaultConnectTimeout
	t0 := time.Now()
	r := offload(t, f, d, buildOpts{wantsLocal: true})
	first := time.Since(t0)
	if r.answer != "decline" {
		t.Errorf("answer %s, want decline (the only machine is down, the daemon can build locally): %s", r.answer, r.messages)
	}
	if accepted() == 0 {
		t.Fatalf("the hook never connected to the silent machine")
	}
	drill(t, "first decision %s after %s (connect timeout %s, probe limit %s); messages: %q", r.answer, first.Round(time.Millisecond), connectTimeout, 2*connectTimeout, r.messages)
	if first > 2*connectTimeout+5*time.Second {
		t.Errorf("the decision took %s, beyond the probe limit %s", first, 2*connectTimeout)
	}
	n := accepted()
	t0 = time.Now()
	r = offload(t, f, d, buildOpts{wantsLocal: true})
	second := time.Since(t0)
	if r.answer != "decline" || accepted() != n {
		t.Errorf("second request: answer %s, %d new connections (want decline, none: the machine is in backoff)", r.answer, accepted()-n)
	} else {
		drill(t, "machine in backoff: the second decision (%s) took %s and opened no connection", r.answer, second.Round(time.Millisecond))
	}
}

// TestChaosDiskFull: the local store is a 2 MiB tmpfs and the output is bigger.
func TestChaosDiskFull(t *testing.T) {
	needChaos(t)
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	store := f.Local.Physical
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", store).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on the store (%v: %s): drill not run", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", store).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", store, err, out)
		}
	})
	d := bigOutDrv(f, "full", 8_000_000)
	before := storeEntries(t, f)
	// The farm's machines live on this host under the same logical store path, so the
	// hook's probe (df on the remote store) would see this tmpfs and skip the machine as
	// low on disk. Seed the probe cache with what a roomy remote would answer.
	m := f.Machines[0]
	st := machines.State{Dir: filepath.Join(f.State, "offload")}
	if err := st.RecordSuccess(m.StateKey(), &machines.Probe{Load1: 0, Cores: 2, FreeBytes: 1 << 40}, time.Now()); err != nil {
		t.Fatal(err)
	}
	drill(t, "local store: a 2 MiB tmpfs; output: 8 MB; the machine's probe cache seeded as roomy (its df would see the same tmpfs)")
	var sfs syscall.Statfs_t
	syscall.Statfs(store, &sfs)
	freeBefore := sfs.Bfree
	r := offload(t, f, d, buildOpts{})
	if r.answer != "accept" || r.status != 1 {
		t.Errorf("answer %s status %d, want accept and the transient 1:\n%s", r.answer, r.status, r.messages)
	} else {
		drill(t, "download into a full store failed with the transient status 1")
	}
	if !strings.Contains(r.messages, "no space left") {
		t.Errorf("the error does not say the disk is full:\n%s", r.messages)
	} else {
		drill(t, "the message says: %s", lineWith(r.messages, "no space left"))
	}
	assertNotInStore(t, f, d.OutputPaths(), before)
	syscall.Statfs(store, &sfs)
	if sfs.Bfree != freeBefore {
		t.Errorf("free blocks %d after, %d before: something stayed", sfs.Bfree, freeBefore)
	} else {
		drill(t, "store unchanged and all space given back (%d entries, %d free blocks)", len(before), freeBefore)
	}
	if !slotFree(t, f, f.Machines[0], 1) {
		t.Errorf("slot held")
	}
}

func lineWith(text, sub string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// treeSnapshot maps every path under root (except skip) to a digest of its content or
// link target, so that any new or changed file shows.
func treeSnapshot(root string, skip ...string) map[string]string {
	snap := map[string]string{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		for _, s := range skip {
			if p == s {
				return filepath.SkipDir
			}
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			snap[p] = "-> " + l
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			snap[p] = fmt.Sprintf("%x", sha256.Sum256(b))
		default:
			snap[p] = fi.Mode().String()
		}
		return nil
	})
	return snap
}

// TestChaosHostile: every hostile mode of the stand-in is refused and nothing is written
// outside the store's temporary directory.
func TestChaosHostile(t *testing.T) {
	needChaos(t)
	passwd := func() string { b, _ := os.ReadFile("/etc/passwd"); return fmt.Sprintf("%x", sha256.Sum256(b)) }
	for _, mode := range []string{"unsigned", "unknown-key", "extra-path", "truncated", "dotdot", "abs-symlink", "wrong-sig", "forged-s"} {
		t.Run(mode, func(t *testing.T) {
			f := farm.New(t, farm.Options{})
			writeMachines(f, nil)
			m := f.Machines[0]
			m.SetHostile(t, mode)
			d := okDrv(f, "hostile-"+mode)
			canary := filepath.Join(f.Dir, "canary")
			if err := os.WriteFile(canary, []byte("canary\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			// Everything on the local side except the machine's own directory, the
			// hook's state (locks, sockets) and the local guix log.
			skip := []string{m.Dir, f.State}
			before, pw := treeSnapshot(f.Dir, skip...), passwd()
			storeBefore := storeEntries(t, f)
			r := offload(t, f, d, buildOpts{shell: true}) // the guix stand-in's hostile exports
			if r.answer != "accept" || r.status != 1 {
				t.Errorf("status %d, want the transient 1:\n%s", r.status, r.messages)
			}
			after := treeSnapshot(f.Dir, skip...)
			var changed []string
			for p, v := range after {
				if before[p] != v && p != f.LocalLog {
					changed = append(changed, p)
				}
			}
			for p := range before {
				if _, ok := after[p]; !ok {
					changed = append(changed, p+" (removed)")
				}
			}
			if len(changed) > 0 {
				t.Errorf("files written outside the store's temporary directory: %q", changed)
			}
			if passwd() != pw {
				t.Errorf("/etc/passwd changed")
			}
			assertNotInStore(t, f, d.OutputPaths(), storeBefore)
			drill(t, "%s: refused with status %d (%s); no file changed outside the store's temporary directory, canary and /etc/passwd intact",
				mode, r.status, lineWith(r.messages, "refusing"))
		})
	}
}

var fileLineCol = regexp.MustCompile(`machines\.scm:\d+:\d+: `)

// mutate returns a random mutation of seed: bytes flipped, deleted, duplicated or
// spliced with Scheme-ish tokens.
func mutate(rnd *mrand.Rand, seed []byte) []byte {
	b := bytes.Clone(seed)
	tokens := []string{"(", ")", "\"", "'", "`", ",", "#t", "#f", "#|", "|#", ";", "\n", "\x00", "\xff", "1e999", "-1",
		"(build-machine", "(name", "(port", "(list", "(define", "(lambda", "(let", "(map", "(string-append", "9999999999999999999999"}
	for range 1 + rnd.IntN(6) {
		if len(b) == 0 {
			b = append(b, tokens[rnd.IntN(len(tokens))]...)
			continue
		}
		i := rnd.IntN(len(b))
		switch rnd.IntN(4) {
		case 0:
			b[i] = byte(rnd.IntN(256))
		case 1:
			j := min(len(b), i+1+rnd.IntN(40))
			b = append(b[:i], b[j:]...)
		case 2:
			j := min(len(b), i+1+rnd.IntN(40))
			b = append(b[:j], append(bytes.Clone(b[i:j]), b[j:]...)...)
		default:
			tok := tokens[rnd.IntN(len(tokens))]
			b = append(b[:i], append([]byte(tok), b[i:]...)...)
		}
	}
	return b
}

// runOnce runs the real binary as the daemon does with input on fd 0 and returns what
// it wrote on fds 1 and 2 and its exit status (-1 when a signal killed it).
func runOnce(t *testing.T, f *farm.Farm, input string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.Bin.Offload, "offload", "x86_64-linux", "0", "1", "0")
	cmd.Env = f.HookEnv()
	cmd.Stdin = strings.NewReader(input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("the hook hung on %q", input)
	}
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		return out.String(), -1
	}
	return out.String(), cmd.ProcessState.ExitCode()
}

func crashed(out string, status int) bool {
	return status == -1 || strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ")
}

// TestChaosGarbage: random request lines and machines files, through the real binary.
func TestChaosGarbage(t *testing.T) {
	needChaos(t)
	n := 1000
	if chaosShort() {
		n = 100
	}
	f := farm.New(t, farm.Options{})
	farmFile := f.WriteMachinesFile(nil)
	d := okDrv(f, "garbage")
	rnd := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 11))
	drill(t, "seed of this run: see the mutations below when one fails")

	t.Run("requests", func(t *testing.T) {
		os.Remove(farmFile) // no machines file: a good request declines without ssh
		seeds := [][]byte{
			[]byte("0 x86_64-linux " + d.Path + " "),
			[]byte("1 x86_64-linux " + d.Path + " kvm,big-mem"),
			[]byte("0 aarch64-linux /gnu/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv"),
		}
		bad := 0
		for i := range n {
			line := bytes.ReplaceAll(mutate(rnd, seeds[i%len(seeds)]), []byte("\n"), []byte(" "))
			out, st := runOnce(t, f, string(line)+"\n")
			if crashed(out, st) {
				t.Fatalf("crash on request %q: status %d:\n%s", line, st, out)
			}
			if strings.HasPrefix(out, "# decline\n") && st == 0 {
				continue // still a valid request
			}
			bad++
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if st == 0 || len(lines) != 1 || lines[0] == "" {
				t.Errorf("request %q: status %d, want non-zero and one error line, got:\n%s", line, st, out)
			}
		}
		drill(t, "%d garbage request lines: no crash; %d refused with exit non-zero and one error line, the rest still valid (declined)", n, bad)
	})

	t.Run("machines", func(t *testing.T) {
		var seeds [][]byte
		for _, p := range []string{"../machines/testdata/forms.scm", "../machines/testdata/manual.scm"} {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			seeds = append(seeds, b)
		}
		// A request for a system no machine has: no ssh, decline either way.
		req := "0 zz-chaos-linux " + d.Path + " \n"
		broken := 0
		for i := range n {
			text := mutate(rnd, seeds[i%len(seeds)])
			if err := os.WriteFile(f.MachinesFile(), text, 0o644); err != nil {
				t.Fatal(err)
			}
			out, st := runOnce(t, f, req)
			if crashed(out, st) {
				t.Fatalf("crash on machines file %q: status %d:\n%s", text, st, out)
			}
			if st != 0 || !strings.Contains(out, "# decline\n") {
				t.Errorf("machines file %q: status %d, want a decline and exit 0:\n%s", text, st, out)
				continue
			}
			msg := strings.TrimSpace(strings.Replace(out, "# decline\n", "", 1))
			if msg == "" {
				continue // the mutation is still a valid file
			}
			broken++
			if !fileLineCol.MatchString(msg) {
				t.Errorf("machines file %q: the error has no FILE:LINE:COL:\n%s", text, msg)
			}
		}
		drill(t, "%d mutated machines files: no crash, every one declined; %d broken ones each with a FILE:LINE:COL error", n, broken)
	})
}
