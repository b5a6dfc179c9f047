// Command demo shows offload's main job on a throwaway build farm: two build machines
// (real OpenSSH sshd servers on 127.0.0.1 running the `guix` stand-in), and the real
// offload binary started exactly as guix-daemon starts it. `make demo` runs it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/farm"
	"offload/locking"
	"offload/statedir"
)

// demoTB lets the test farm run outside `go test`: the farm only needs a temporary
// directory, cleanups and a way to fail. (Embedding testing.TB satisfies its private
// method; only the methods below are ever called.)
type demoTB struct {
	testing.TB
	dir      string
	n        int
	cleanups []func()
}

func (t *demoTB) Helper() {}
func (t *demoTB) TempDir() string {
	t.n++
	d := filepath.Join(t.dir, fmt.Sprintf("%03d", t.n))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}
func (t *demoTB) Cleanup(f func())             { t.cleanups = append(t.cleanups, f) }
func (t *demoTB) Fatal(args ...any)            { t.fail(fmt.Sprint(args...)) }
func (t *demoTB) Fatalf(f string, args ...any) { t.fail(fmt.Sprintf(f, args...)) }
func (t *demoTB) Errorf(f string, args ...any) { fmt.Fprintf(os.Stderr, "demo: "+f+"\n", args...) }
func (t *demoTB) Skipf(f string, args ...any)  { t.fail(fmt.Sprintf(f, args...)) }
func (t *demoTB) Logf(f string, args ...any)   { fmt.Printf(f+"\n", args...) }
func (t *demoTB) Log(args ...any)              { fmt.Println(args...) }
func (t *demoTB) fail(msg string)              { fmt.Fprintln(os.Stderr, "demo: "+msg); t.close(); os.Exit(1) }
func (t *demoTB) close() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
	farm.Cleanup()
	os.RemoveAll(t.dir)
}

func main() {
	dir, err := os.MkdirTemp("", "offload-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	t := &demoTB{dir: dir}
	code := run(t)
	t.close() // not deferred: os.Exit would skip it and leave the sshd servers running
	os.Exit(code)
}

func step(format string, args ...any) {
	fmt.Printf("\n== "+format+"\n", args...)
}

func say(format string, args ...any) {
	fmt.Printf("   "+format+"\n", args...)
}

func run(t *demoTB) int {
	step("Setting up a throwaway build farm (two sshd servers on 127.0.0.1 playing build machines)")
	f := farm.New(t, farm.Options{Machines: 2})
	fast, slow := f.Machines[0], f.Machines[1]
	f.WriteMachinesFile(func(m *farm.Machine) string {
		// The demo machine's real load is whatever else runs on it: ignore it here.
		speed := "1.0"
		if m == fast {
			speed = "2.0"
		}
		return "(speed " + speed + ")\n  (overload-threshold #f)"
	})
	say("local store:     %s", f.Local.Logical)
	say("machines file:   %s", f.MachinesFile())
	say("machine 'fast':  127.0.0.1 port %d (speed 2.0), its own store under %s", fast.Port, fast.Store.Physical)
	say("machine 'slow':  127.0.0.1 port %d (speed 1.0), its own store under %s", slow.Port, slow.Store.Physical)
	say("each side has a signing key; each trusts the other's (as `guix archive --authorize` does)")
	show(f, "machines", f.MachinesFile())

	ctx := context.Background()
	failures := 0

	step("1. A build that is offloaded, built on the fastest machine, and brought back")
	in := f.AddLocalItem("greeting", map[string]string{"text": "hello from the local store\n"})
	ok := f.MakeDrv(drv.Spec{
		Name:      "hello-offload",
		Args:      []string{"-c", `echo "building on $(hostname) as $(id -un)"; { cat "$IN/text"; echo "built remotely"; } > "$out"`},
		Env:       map[string]string{"IN": in},
		InputSrcs: []string{in},
		Nonce:     fmt.Sprint(time.Now().UnixNano()),
	})
	say("derivation %s", ok.Path)
	status := request(ctx, f, ok, true, 0)
	out := ok.OutputPaths()[0]
	if b, err := os.ReadFile(out); status == 0 && err == nil {
		say("result: exit 0, and the output is now in the local store:")
		say("  %s:", out)
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			say("    | %s", l)
		}
	} else {
		say("UNEXPECTED: exit %d, output: %v", status, err)
		failures++
	}

	step("   `offload test`: check each machine the way the hook uses it")
	show(f, "test", f.MachinesFile())

	step("2. A build for a system no machine has (aarch64-linux): declined, the daemon builds it locally")
	arm := f.MakeDrv(drv.Spec{Name: "hello-arm", System: "aarch64-linux", Args: []string{"-c", "true"}, Nonce: "arm"})
	if ans := answerOnly(ctx, f, arm, true); ans != "decline" {
		say("UNEXPECTED answer %q", ans)
		failures++
	}

	step("3. Every build slot is taken (parallel-builds 1 on each machine), and the place in each machine's queue too: postponed, the daemon asks again later")
	var held []*locking.Lock
	for _, m := range f.Machines {
		id := fmt.Sprintf("%s:%d", m.Name, m.Port)
		layout := statedir.Layout{Dir: filepath.Join(f.State, "offload")}
		for _, dir := range []string{layout.Slots(id), layout.Queue(id)} {
			l, _, err := locking.AcquireSlot(dir, 1, "a build of the demo")
			if err != nil || l == nil {
				t.Fatalf("taking %s: %v", dir, err)
			}
			held = append(held, l)
		}
	}
	if ans := answerOnly(ctx, f, ok, false); ans != "postpone" {
		say("UNEXPECTED answer %q", ans)
		failures++
	}
	step("   `offload status` while both slots are held")
	show(f, "status", f.MachinesFile())
	for _, l := range held {
		l.Release()
	}

	step("4. A build that fails on the machine: exit 100 (permanent), nothing is fetched")
	bad := f.MakeDrv(drv.Spec{Name: "hello-fail", Args: []string{"-c", `echo "about to fail"; exit 1`}, Nonce: fmt.Sprint(time.Now().UnixNano())})
	if st := request(ctx, f, bad, true, 0); st != 100 {
		say("UNEXPECTED exit %d", st)
		failures++
	} else {
		say("result: exit 100; the daemon reports the build as failed and keeps the log")
	}

	step("5. Machine 'fast' goes down: it is skipped, the build goes to 'slow'")
	fast.Server.Stop()
	again := f.MakeDrv(drv.Spec{Name: "hello-failover", Args: []string{"-c", `echo again > "$out"`}, Nonce: fmt.Sprint(time.Now().UnixNano())})
	if st := request(ctx, f, again, true, 0); st != 0 {
		say("UNEXPECTED exit %d", st)
		failures++
	}

	step("6. `offload explain`: what the hook would do now, and why")
	show(f, "explain", "x86_64-linux")

	step("7. `offload status`: the farm as the hook sees it")
	show(f, "status", f.MachinesFile())

	if failures > 0 {
		fmt.Printf("\n%d step(s) did not go as expected\n", failures)
		return 1
	}
	fmt.Println("\nAll done: the farm is removed (sshd servers stopped, temporary files deleted).")
	return 0
}

// request runs one request through a fresh hook, as guix-daemon does, printing what
// the hook says (fd 1/2) and the build log (fd 4) as they come.
func request(ctx context.Context, f *farm.Farm, d *drv.Derivation, wantsLocal bool, timeout int) int {
	h, err := daemon.StartWith(ctx, f.HookArgv(d.System, 0, true, timeout), f.HookEnv(),
		daemon.Options{Messages: newPrefixed(os.Stdout, "   hook> "), Log: newPrefixed(os.Stdout, "   log>  ")})
	if err != nil {
		say("cannot start the hook: %v", err)
		return -1
	}
	defer h.Kill()
	say("daemon> %d %s %s %s", b2i(wantsLocal), d.System, d.Path, strings.Join(d.Features(), ","))
	ans, err := h.Request(wantsLocal, d.System, d.Path, d.Features())
	if err != nil {
		say("hook failed to answer: %v", err)
		return -1
	}
	say("hook answered: # %s", ans)
	if ans != "accept" {
		h.CloseStdin()
		h.Wait()
		return -1
	}
	if err := f.SendPaths(h, d); err != nil {
		say("sending paths: %v", err)
		return -1
	}
	st, _, _ := h.Wait()
	say("hook exited with status %d", st)
	return st
}

func answerOnly(ctx context.Context, f *farm.Farm, d *drv.Derivation, wantsLocal bool) string {
	h, err := daemon.StartWith(ctx, f.HookArgv(d.System, 0, true, 0), f.HookEnv(), daemon.Options{Messages: newPrefixed(os.Stdout, "   hook> ")})
	if err != nil {
		say("cannot start the hook: %v", err)
		return ""
	}
	defer h.Kill()
	say("daemon> %d %s %s %s", b2i(wantsLocal), d.System, d.Path, strings.Join(d.Features(), ","))
	ans, err := h.Request(wantsLocal, d.System, d.Path, d.Features())
	if err != nil {
		say("hook failed to answer: %v", err)
		return ""
	}
	say("hook answered: # %s", ans)
	h.CloseStdin()
	h.Wait()
	return ans
}

// show runs an offload sub-command and prints its output.
func show(f *farm.Farm, args ...string) {
	say("$ offload %s", strings.Join(args, " "))
	cmd := exec.Command(f.Bin.Offload, args...)
	cmd.Env = f.HookEnv()
	stdout, stderr := newPrefixed(os.Stdout, "   "), newPrefixed(os.Stdout, "   ")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	stdout.Flush()
	stderr.Flush()
	if err != nil {
		say("(exit: %v)", err)
	}
	_ = io.Discard
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
