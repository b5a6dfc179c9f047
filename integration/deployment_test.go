package integration

// Tests of the hook as real installations run it (../shared/spec/DEPLOYMENT.md): Guix
// System's environment for the daemon, a host without ssh, a machine that died since
// its last probe, an edited machines file, a daemon that runs as an unprivileged user.

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/farm"
	"offload/machines"
	"offload/sshexec"
)

// hookWith starts the hook with argv and env as given, killed when the test ends.
func hookWith(t *testing.T, argv, env []string, opts daemon.Options) *daemon.Hook {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	h, err := daemon.StartWith(ctx, argv, env, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Kill)
	return h
}

// assertBuilt checks that d's outputs are in the local store, built from nonce.
func assertBuilt(t *testing.T, d *drv.Derivation, nonce string, r result) {
	t.Helper()
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s, status %d; messages:\n%s", r.answer, r.status, r.messages)
	}
	for _, out := range d.OutputPaths() {
		b, err := os.ReadFile(out)
		if err != nil || !strings.Contains(string(b), "hello "+nonce) {
			t.Errorf("output %s: %q, %v", out, b, err)
		}
	}
}

// TestGuixSystemEnvironment: the daemon's environment on Guix System (PATH with tar
// and gzip only, no HOME, no OFFLOAD_GUIX) and the hook's parent a guix-daemon with
// the real guix beside it: ssh comes from the usual places, guix from beside the
// daemon, and the build is offloaded.
func TestGuixSystemEnvironment(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := okDrv(f, "gsys")
	h := hookWith(t, f.DaemonHookArgv("x86_64-linux", 0, true, 0), f.GuixSystemEnv(), daemon.Options{})
	r := build(t, f, h, d, false)
	assertBuilt(t, d, "gsys", r)
	// The input went up without a guix process here (the local daemon and this host's
	// key), and nothing else is on PATH.
	if inv := f.LocalInvocations(); len(inv) != 0 {
		t.Errorf("guix ran here: %q", inv)
	}
	// The shell path works in the same environment (its remote guix found by the
	// machine's own PATH, its local export through the same exporter).
	d = okDrv(f, "gsys-shell")
	h = hookWith(t, f.DaemonHookArgv("x86_64-linux", 0, true, 0), append(f.GuixSystemEnv(), "OFFLOAD_PATH=shell"), daemon.Options{})
	assertBuilt(t, d, "gsys-shell", build(t, f, h, d, false))
}

// TestNoSSHAnywhere: on a host that has no ssh at all, the hook says so in one line
// naming the places it tried, declines (the daemon builds locally) and puts no
// machine into backoff.
func TestNoSSHAnywhere(t *testing.T) {
	unshare, err1 := exec.LookPath("unshare")
	mount, err2 := exec.LookPath("mount")
	if err1 != nil || err2 != nil {
		t.Fatalf("this test needs unshare and mount (util-linux): %v %v", err1, err2)
	}
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := okDrv(f, "nossh")
	// A mount namespace of the hook's own, where every usual ssh is hidden.
	var hide []string
	for _, dir := range sshexec.UsualDirs {
		if _, err := os.Stat(filepath.Join(dir, "ssh")); err == nil {
			hide = append(hide, mount+" --bind /dev/null "+filepath.Join(dir, "ssh"))
		}
	}
	script := strings.Join(append(hide, `exec "$@"`), " && ")
	argv := append([]string{unshare, "-m", "/bin/sh", "-c", script, "sh"}, f.DaemonHookArgv("x86_64-linux", 0, true, 0)...)
	h := hookWith(t, argv, f.GuixSystemEnv(), daemon.Options{})
	r := build(t, f, h, d, true)
	if r.answer != "decline" || r.status != 0 {
		t.Fatalf("answer %s, status %d; messages:\n%s", r.answer, r.status, r.messages)
	}
	lines := h.Messages()
	if n := countContaining(lines, "cannot find the ssh program on this host"); n != 1 {
		t.Errorf("%d lines say ssh is missing, want 1:\n%s", n, r.messages)
	}
	if !contains(lines, "/usr/bin/ssh") || !contains(lines, "OFFLOAD_SSH") {
		t.Errorf("the message does not name the places tried and the variable:\n%s", r.messages)
	}
	st := machines.State{Dir: filepath.Join(f.State, "offload")}
	health, err := st.Health(f.Machines[0].StateKey())
	if err != nil || health.Failures != 0 {
		t.Errorf("the machine went into backoff for a missing local ssh: %+v %v", health, err)
	}
	if len(f.Machines[0].Server.Log()) > 0 && strings.Contains(f.Machines[0].Server.Log(), "Accepted publickey") {
		t.Errorf("something connected to the machine")
	}
}

// TestDeadMachineNotAccepted: a machine that built something a moment ago and then
// died still has a fresh probe in the cache; the hook must not accept on the strength
// of it. With a free local slot it declines (the daemon builds locally), without one
// it postpones.
func TestDeadMachineNotAccepted(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := okDrv(f, "alive")
	r := offload(t, f, d, buildOpts{})
	assertBuilt(t, d, "alive", r)

	m := f.Machines[0]
	m.Server.Stop()
	waitNoMaster(t, f)
	// The probe cache says the machine answered just now (it may have expired while
	// the test ran on a loaded machine; seed it so that the case is the one asked).
	st := machines.State{Dir: filepath.Join(f.State, "offload")}
	if err := st.RecordSuccess(m.StateKey(), &machines.Probe{Load1: 0, Cores: 2, FreeBytes: 1 << 40}, time.Now()); err != nil {
		t.Fatal(err)
	}
	h := startHook(t, f, buildOpts{})
	d2 := okDrv(f, "dead1")
	ans, err := h.Request(true, d2.System, d2.Path, d2.Features())
	if err != nil || ans != "decline" {
		t.Fatalf("with a free local slot: %s, %v; messages:\n%s", ans, err, strings.Join(h.Messages(), "\n"))
	}
	ans, err = h.Request(false, d2.System, d2.Path, d2.Features())
	if err != nil || ans != "postpone" {
		t.Fatalf("without a local slot: %s, %v; messages:\n%s", ans, err, strings.Join(h.Messages(), "\n"))
	}
	if !contains(h.Messages(), "cannot be reached now") {
		t.Errorf("no line says why the machine was not taken:\n%s", strings.Join(h.Messages(), "\n"))
	}
	assertNamedOnce(t, h.Messages(), m)
	health, _ := st.Health(m.StateKey())
	if health.Failures == 0 {
		t.Errorf("the dead machine is not in backoff: %+v", health)
	}
}

// waitNoMaster waits until no shared ssh connection of the hook is alive (a master
// notices at once that its server died, but exits in its own time).
func waitNoMaster(t *testing.T, f *farm.Farm) {
	t.Helper()
	dir, err := (&sshexec.Runner{StateDir: filepath.Join(f.State, "offload")}).ControlDir()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		socks, _ := filepath.Glob(filepath.Join(dir, "*"))
		alive := false
		for _, s := range socks {
			if c, err := net.Dial("unix", s); err == nil {
				c.Close()
				alive = true
			}
		}
		if !alive {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the shared ssh connection outlived its server by 20 s")
}

// TestEditedHostKeyTakesEffect: a wrong host-key puts the machine into backoff; once
// the file has the right one, the very next request uses the machine (the backoff
// belonged to the old settings).
func TestEditedHostKeyTakesEffect(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	good, wrongKey := f.Machines[0], f.Machines[1].Target().HostKey
	f.Machines = f.Machines[:1] // the file lists the first machine only
	writeMachines(f, nil)
	file := f.MachinesFile()
	right := mustRead(t, file)
	wrong := strings.Replace(right, good.Target().HostKey, wrongKey, 1)
	if wrong == right {
		t.Fatal("could not put the wrong host key in the file")
	}
	if err := os.WriteFile(file, []byte(wrong), 0o644); err != nil {
		t.Fatal(err)
	}
	h := startHook(t, f, buildOpts{})
	d := okDrv(f, "hostkey")
	ans, err := h.Request(true, d.System, d.Path, d.Features())
	if err != nil || ans != "decline" {
		t.Fatalf("wrong host key: %s, %v; messages:\n%s", ans, err, strings.Join(h.Messages(), "\n"))
	}
	if !contains(h.Messages(), "is not the host-key pinned in machines.scm") {
		t.Errorf("no host key mismatch reported:\n%s", strings.Join(h.Messages(), "\n"))
	}
	// The administrator fixes the file; the next request (same hook process, well
	// within the 5 s backoff) takes the machine.
	if err := os.WriteFile(file, []byte(right), 0o644); err != nil {
		t.Fatal(err)
	}
	ans, err = h.Request(false, d.System, d.Path, d.Features())
	if err != nil || ans != "accept" {
		t.Fatalf("fixed host key: %s, %v; messages:\n%s", ans, err, strings.Join(h.Messages(), "\n"))
	}
	if err := f.SendPaths(h, d); err != nil {
		t.Fatal(err)
	}
	status, _, err := h.Wait()
	if err != nil || status != 0 {
		t.Fatalf("status %d, %v; messages:\n%s", status, err, strings.Join(h.Messages(), "\n"))
	}
}

func mustRead(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestUnprivilegedHook: the daemon, and so the hook, runs as an unprivileged user that
// owns the store, the state directory and its key (as Guix's guix-daemon user does):
// the build is offloaded and its output lands in the store as that user's.
func TestUnprivilegedHook(t *testing.T) {
	const uid, gid = 65534, 65534 // nobody: no home, no shell, nothing of root's
	f := farm.New(t, farm.Options{})
	m := f.Machines[0]
	// The daemon user's own copy of the machine's key.
	keyDir := filepath.Join(f.Dir, "daemon-user-ssh")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(keyDir, "id_ed25519")
	b, err := os.ReadFile(m.Target().PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, b, 0o600); err != nil {
		t.Fatal(err)
	}
	writeMachines(f, nil)
	src := strings.ReplaceAll(mustRead(t, f.MachinesFile()), m.Target().PrivateKey, key)
	if err := os.WriteFile(f.MachinesFile(), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	d := okDrv(f, "unpriv")
	// Everything of the local side belongs to the daemon's user; the directories above
	// it may be entered by anyone, as /gnu and /var are.
	for _, p := range []string{f.Local.Physical, f.Local.DB, f.Local.Conf, f.State, keyDir, filepath.Dir(f.LocalLog)} {
		chownTree(t, p, uid, gid)
	}
	for dir := f.Dir; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o005 != 0o005 {
			os.Chmod(dir, st.Mode().Perm()|0o055)
		}
	}
	h := hookWith(t, f.DaemonHookArgv("x86_64-linux", 0, true, 0), f.GuixSystemEnv(),
		daemon.Options{Credential: &syscall.Credential{Uid: uid, Gid: gid}})
	r := build(t, f, h, d, false)
	assertBuilt(t, d, "unpriv", r)
	for _, out := range d.OutputPaths() {
		st, err := os.Lstat(out)
		if err != nil {
			t.Fatal(err)
		}
		if owner := st.Sys().(*syscall.Stat_t).Uid; owner != uid {
			t.Errorf("output %s belongs to uid %d, want the daemon user's %d", out, owner, uid)
		}
	}
	// Its state (host-key pins, state files) is its own.
	pins, _ := filepath.Glob(filepath.Join(f.State, "offload", "known_hosts.d", "*"))
	if len(pins) == 0 {
		t.Errorf("no host key pin under %s", f.State)
	}
	for _, p := range pins {
		if st, err := os.Stat(p); err != nil || st.Sys().(*syscall.Stat_t).Uid != uid {
			t.Errorf("pin %s not the daemon user's: %v", p, err)
		}
	}
}

func chownTree(t *testing.T, root string, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// assertNamedOnce checks that no line names machine m twice (each message names it
// once, in one form, by the layer that knows it).
func assertNamedOnce(t *testing.T, lines []string, m *farm.Machine) {
	t.Helper()
	name := m.Name + ":" + itoa(m.Port)
	for _, l := range lines {
		if strings.Count(l, name) > 1 && !strings.Contains(l, "ssh: connect to host") {
			t.Errorf("the line names %s more than once: %s", name, l)
		}
		if strings.Count(l, "'"+name+"'") > 1 {
			t.Errorf("the line names '%s' more than once: %s", name, l)
		}
	}
}

// TestCheckingEndsBackoff: a machine in backoff that answers `offload status` or
// `offload test` is out of it at once: the next request uses it, without waiting for
// the backoff to end.
func TestCheckingEndsBackoff(t *testing.T) {
	for _, cmd := range []string{"status", "test"} {
		t.Run(cmd, func(t *testing.T) {
			f := farm.New(t, farm.Options{})
			writeMachines(f, nil)
			m := f.Machines[0]
			st := machines.State{Dir: filepath.Join(f.State, "offload")}
			if err := st.RecordFailure(m.StateKey(), errors.New("connection refused"), time.Now()); err != nil {
				t.Fatal(err)
			}
			d := okDrv(f, "after-"+cmd) // also the local item `offload test` sends
			if stdout, stderr, status := runOffload(t, f, cmd, f.MachinesFile()); status != 0 {
				t.Fatalf("offload %s: status %d: %s%s", cmd, status, stdout, stderr)
			}
			if h, err := st.Health(m.StateKey()); err != nil || h.Failures != 0 {
				t.Fatalf("after a successful `offload %s` the machine is still in backoff: %+v %v", cmd, h, err)
			}
			r := offload(t, f, d, buildOpts{wantsLocal: true})
			assertBuilt(t, d, "after-"+cmd, r)
		})
	}
}
