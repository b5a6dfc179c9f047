package farm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"offload/machines"
	"offload/sshexec"
)

// handshake does the worker protocol's handshake as a 0x163 client on c and reports
// what went wrong, if anything. closedEarly is true when the connection ended before
// the daemon's magic: what a client sees when sshd refuses the forward or the remote
// daemon is gone (WORKER-PROTOCOL.md §6).
func handshake(c net.Conn) (closedEarly bool, err error) {
	c.SetDeadline(time.Now().Add(60 * time.Second))
	put := func(vs ...uint64) error {
		b := make([]byte, 8*len(vs))
		for i, v := range vs {
			binary.LittleEndian.PutUint64(b[8*i:], v)
		}
		_, err := c.Write(b)
		return err
	}
	r := bufio.NewReader(c)
	get := func() (uint64, error) {
		var b [8]byte
		_, err := io.ReadFull(r, b[:])
		return binary.LittleEndian.Uint64(b[:]), err
	}
	if err := put(0x6e697863); err != nil {
		return true, err
	}
	magic, err := get()
	if err != nil {
		return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), err
	}
	version, _ := get()
	if magic != 0x6478696f || version != 0x163 {
		return false, errors.New("bad magic or version")
	}
	if err := put(0x163, 0, 1); err != nil {
		return false, err
	}
	if last, err := get(); err != nil || last != 0x616c7473 {
		return false, errors.New("no STDERR_LAST after the handshake")
	}
	return false, nil
}

func dialHandshake(t *testing.T, socket string) (closedEarly bool, err error) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		return false, err
	}
	defer c.Close()
	return handshake(c)
}

func TestDaemons(t *testing.T) {
	f := New(t, Options{Machines: 2, NoOffload: true})
	for _, s := range []string{f.LocalDaemonSocket(), f.Machines[0].DaemonSocket(), f.Machines[1].DaemonSocket()} {
		if _, err := dialHandshake(t, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if f.LocalDaemonSocket() != filepath.Join(f.State, "daemon-socket", "socket") {
		t.Errorf("local socket %s", f.LocalDaemonSocket())
	}
	for _, env := range [][]string{f.HookEnv(), f.GuixSystemEnv()} {
		if !strings.Contains(strings.Join(env, "\n")+"\n", "\nGUIX_DAEMON_SOCKET="+f.LocalDaemonSocket()+"\n") {
			t.Errorf("environment lacks GUIX_DAEMON_SOCKET: %q", env)
		}
	}
	ms, _, err := machines.Load(f.WriteMachinesFile(nil))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range ms {
		if m.DaemonSocket != f.Machines[i].DaemonSocket() {
			t.Errorf("machine %d: daemon-socket %q", i, m.DaemonSocket)
		}
	}

	m := f.Machines[1]
	m.StopDaemon(t)
	if _, err := dialHandshake(t, m.DaemonSocket()); err == nil {
		t.Error("a stopped daemon still answers")
	}
	if _, err := dialHandshake(t, f.Machines[0].DaemonSocket()); err != nil {
		t.Errorf("the other machine's daemon: %v", err)
	}
	m.StartDaemon(t)
	if _, err := dialHandshake(t, m.DaemonSocket()); err != nil {
		t.Errorf("restarted daemon: %v", err)
	}
	m.SetDaemonHostile(t, "no-magic")
	if early, err := dialHandshake(t, m.DaemonSocket()); !early {
		t.Errorf("no-magic daemon: %v", err)
	}
	m.SetDaemonHostile(t, "")
	if _, err := dialHandshake(t, m.DaemonSocket()); err != nil {
		t.Errorf("daemon behaving again: %v", err)
	}
}

// forward runs `ssh -N -L local:m's daemon socket` through m's real sshd until the test
// ends, and returns the local socket once something accepts on it.
func forward(t *testing.T, m *Machine) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fwd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, []byte("[127.0.0.1]:"+strconv.Itoa(m.Port)+" "+m.Server.HostKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	local := filepath.Join(dir, "guix.sock")
	tg := m.Target()
	cmd := exec.Command("ssh", "-N", "-i", tg.PrivateKey, "-l", tg.User, "-p", strconv.Itoa(m.Port),
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+known, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "ControlMaster=no", "-o", "ControlPath=none",
		"-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
		"-E", filepath.Join(dir, "ssh.log"),
		"-L", local+":"+m.DaemonSocket(), "127.0.0.1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", local); err == nil {
			c.Close()
			return local
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "ssh.log"))
			t.Fatalf("ssh -L exited: %v: %s", err, b)
		case <-time.After(10 * time.Millisecond):
		}
		if i > 6000 {
			t.Fatal("ssh -L never bound the local socket")
		}
	}
}

// A hook reaches a machine's daemon through the machine's real sshd: ssh -L from a local
// socket to the daemon's socket. While the daemon is down, each connection through the
// forward closes before the magic; once it is back, the same forward works again.
func TestForwardToMachineDaemon(t *testing.T) {
	f := New(t, Options{Machines: 1, NoOffload: true})
	m := f.Machines[0]
	local := forward(t, m)
	if _, err := dialHandshake(t, local); err != nil {
		t.Fatalf("handshake through the forward: %v", err)
	}
	m.StopDaemon(t)
	if early, err := dialHandshake(t, local); !early {
		t.Errorf("daemon down: want the connection closed before the magic, got %v", err)
	}
	m.StartDaemon(t)
	if _, err := dialHandshake(t, local); err != nil {
		t.Errorf("handshake after the daemon restarted: %v", err)
	}
}

// A machine whose sshd refuses forwarding (Options.RefuseForwarding): the forward binds,
// and each connection through it is closed before the daemon's magic (§6); only the
// sshd log tells it from a daemon that is down.
func TestRefusingMachineClosesBeforeMagic(t *testing.T) {
	f := New(t, Options{Machines: 2, NoOffload: true, RefuseForwarding: []int{1}})
	if _, err := dialHandshake(t, forward(t, f.Machines[0])); err != nil {
		t.Fatalf("the allowing machine: %v", err)
	}
	m := f.Machines[1]
	if early, err := dialHandshake(t, forward(t, m)); !early {
		t.Fatalf("refusing machine: want the connection closed before the magic, got %v", err)
	}
	for i := 0; !strings.Contains(m.Server.Log(), "refused streamlocal port forward"); i++ {
		if i > 3000 {
			t.Fatalf("sshd log does not show the refusal:\n%s", m.Server.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The machine's daemon itself is fine.
	if _, err := dialHandshake(t, m.DaemonSocket()); err != nil {
		t.Errorf("refusing machine's daemon, directly: %v", err)
	}
}

// Options.GuixCosts reaches every stand-in: guix on the machines (over ssh) and locally,
// and the daemons. No timing is asserted (speed lives in benchmarks).
func TestGuixCostsReachStandIns(t *testing.T) {
	f := New(t, Options{Machines: 1, NoOffload: true, GuixCosts: true})
	m := f.Machines[0]
	r := &sshexec.Runner{StateDir: filepath.Join(f.State, "offload")}
	if _, err := remote(t, r, m, strings.NewReader(""), "archive", "--missing"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(f.Bin.GuixDir, "guix"), "--version")
	cmd.Env = f.HookEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("local guix: %v: %s", err, out)
	}
	for file, want := range map[string]string{m.CostsLog(): "archive --missing 170ms\n", f.LocalCostsLog(): "--version 134ms\n"} {
		if b, _ := os.ReadFile(file); string(b) != want {
			t.Errorf("%s: %q, want %q", file, b, want)
		}
	}
	for _, log := range []string{m.DaemonLog(), filepath.Join(f.Dir, "local", "daemon.log")} {
		if b, _ := os.ReadFile(log); !strings.Contains(string(b), "modelling Guix's costs") {
			t.Errorf("%s: %q", log, b)
		}
	}
}
