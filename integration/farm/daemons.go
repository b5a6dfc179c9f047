package farm

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"offload/sshexec/sshtest"
)

// A farm runs one stand-in guix-daemon (integration/cmd/workerd) per machine, on the
// machine's store, at m.DaemonSocket(), and one for the local store at
// f.LocalDaemonSocket(): the sockets a hook reaches through an ssh forward and
// directly. They stop when the test ends.

// daemonProc is one running workerd.
type daemonProc struct {
	cmd    *exec.Cmd
	socket string
	done   chan struct{}
}

// DaemonSocket is where the machine's daemon listens: GuixStateDir()/daemon-socket/socket,
// as (daemon-socket ...) in the machines file says.
func (m *Machine) DaemonSocket() string {
	return filepath.Join(m.GuixStateDir(), "daemon-socket", "socket")
}

// DaemonHostileFile is the file SetDaemonHostile writes (the daemon's
// WORKERD_HOSTILE_FILE).
func (m *Machine) DaemonHostileFile() string { return filepath.Join(m.Dir, "daemon-hostile") }

// DaemonLog is where the machine's daemon writes its own errors.
func (m *Machine) DaemonLog() string { return filepath.Join(m.Dir, "daemon.log") }

// daemonEnv is the environment of the machine's daemon: its store, keys, state
// directory and substitute server. A root peer counts as untrusted, as the non-root
// account an offload logs in as would on a real machine (the farm's sshd logs in as
// whoever runs the tests).
func (m *Machine) daemonEnv(costs bool) []string {
	env := append(m.Store.Drv().Env(),
		"GUIX_CONFIGURATION_DIRECTORY="+m.Store.Conf,
		"GUIX_STATE_DIRECTORY="+m.GuixStateDir(),
		"WORKERD_HOSTILE_FILE="+m.DaemonHostileFile(),
		"WORKERD_ROOT_UNTRUSTED=1",
		// The machine's substitute server, as its guix has it (New).
		"FAKEGUIX_SUBSTITUTES="+m.SubstituteDir(),
		"PATH=/usr/bin:/bin")
	if costs {
		env = append(env, "WORKERD_COSTS=guix")
	}
	return env
}

// StartDaemon starts the machine's daemon (after StopDaemon; New starts it).
func (m *Machine) StartDaemon(t testing.TB) {
	t.Helper()
	if m.daemon != nil {
		t.Fatalf("farm: the daemon of %s:%d already runs", m.Name, m.Port)
	}
	p, err := startDaemon(m.workerd, m.DaemonSocket(), m.daemonEnv(m.costs), m.DaemonLog())
	if err != nil {
		t.Fatalf("farm: daemon of %s:%d: %v", m.Name, m.Port, err)
	}
	m.daemon = p
}

// StopDaemon stops the machine's daemon, as if guix-daemon went down: its connections
// close, their builds are interrupted, its socket is gone. No-op when it does not run.
func (m *Machine) StopDaemon(t testing.TB) {
	t.Helper()
	if m.daemon == nil {
		return
	}
	if err := m.daemon.stop(); err != nil {
		t.Errorf("farm: daemon of %s:%d: %v", m.Name, m.Port, err)
	}
	m.daemon = nil
}

// Freeze stops the machine (SIGSTOP to its sshd, sessions, daemon and builds), as a
// hung host or a black-holed network looks from here: connections stay open, nothing
// answers. Our own ssh clients are not the machine's and keep running. Thaw undoes it.
func (m *Machine) Freeze() { m.signal(syscall.SIGSTOP) }

// Thaw continues a frozen machine.
func (m *Machine) Thaw() { m.signal(syscall.SIGCONT) }

func (m *Machine) signal(sig syscall.Signal) {
	m.Server.Signal(sig)
	if m.daemon != nil && m.daemon.cmd.Process != nil {
		pid := m.daemon.cmd.Process.Pid
		for _, p := range append([]int{pid}, sshtest.Descendants(pid)...) {
			syscall.Kill(p, sig)
		}
	}
}

// Die kills the machine: its sshd with every session, and its daemon with its builds.
func (m *Machine) Die(t testing.TB) {
	t.Helper()
	m.Server.Stop()
	if m.daemon != nil {
		m.daemon.kill()
		m.daemon = nil
	}
}

// SetDaemonHostile makes the machine's daemon misbehave in the given way (a mode of
// workerd's hostile.go: no-magic, hang, garbage, close-mid-export, bad-export-hash,
// close-mid-import) from its next connection or request on; "" makes it behave again.
func (m *Machine) SetDaemonHostile(t testing.TB, mode string) {
	t.Helper()
	if err := os.WriteFile(m.DaemonHostileFile(), []byte(mode), 0o644); err != nil {
		t.Fatal(err)
	}
}

// LocalDaemonSocket is where the local store's daemon listens:
// $GUIX_STATE_DIRECTORY/daemon-socket/socket of the hook's environment (f.State). HookEnv
// and GuixSystemEnv also name it in GUIX_DAEMON_SOCKET.
func (f *Farm) LocalDaemonSocket() string {
	return filepath.Join(f.State, "daemon-socket", "socket")
}

// localDaemonEnv is the local daemon's environment: the local store and keys, the
// hook's state directory (where its temporary roots go).
func (f *Farm) localDaemonEnv() []string {
	env := append(f.Local.Drv().Env(),
		"GUIX_CONFIGURATION_DIRECTORY="+f.Local.Conf,
		"GUIX_STATE_DIRECTORY="+f.State,
		"WORKERD_HOSTILE_FILE="+filepath.Join(f.Dir, "local", "daemon-hostile"),
		"PATH=/usr/bin:/bin")
	if f.opts.GuixCosts {
		env = append(env, "WORKERD_COSTS=guix")
	}
	return env
}

// startDaemon starts workerd on socket and waits until it accepts connections.
func startDaemon(bin, socket string, env []string, logFile string) (*daemonProc, error) {
	if len(socket) >= 108 {
		return nil, fmt.Errorf("socket path %s is too long for a Unix socket (%d bytes)", socket, len(socket))
	}
	log, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, "-listen", socket)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that a daemon that ignores SIGTERM can be killed whole.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &daemonProc{cmd: cmd, socket: socket, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	// Generous: a loaded machine may take long to start a process.
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.Dial("unix", socket)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			b, _ := os.ReadFile(logFile)
			return nil, fmt.Errorf("workerd exited: %s", lastLine(b))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("workerd does not listen on %s: %v", socket, err)
		}
	}
}

// stop ends the daemon with SIGTERM (it closes its connections and interrupts their
// builds), or SIGKILL after a long wait.
func (p *daemonProc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.kill()
		return errors.New("workerd ignored SIGTERM; killed")
	}
	os.Remove(p.socket)
	return nil
}

func (p *daemonProc) kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	os.Remove(p.socket)
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// StartLocalDaemon starts the local store's daemon (after StopLocalDaemon; New starts
// it).
func (f *Farm) StartLocalDaemon(t testing.TB) {
	t.Helper()
	if f.localDaemon != nil {
		t.Fatal("farm: the local daemon already runs")
	}
	p, err := startDaemon(f.Bin.Workerd, f.LocalDaemonSocket(), f.localDaemonEnv(), filepath.Join(f.Dir, "local", "daemon.log"))
	if err != nil {
		t.Fatalf("farm: local daemon: %v", err)
	}
	f.localDaemon = p
}

// StopLocalDaemon stops the local store's daemon; no-op when it does not run.
func (f *Farm) StopLocalDaemon(t testing.TB) {
	t.Helper()
	if f.localDaemon == nil {
		return
	}
	if err := f.localDaemon.stop(); err != nil {
		t.Errorf("farm: local daemon: %v", err)
	}
	f.localDaemon = nil
}

// shortTempDir makes the farm's directory, removed when the test ends. It is short
// (/tmp/farm-N), not t.TempDir(), whose name holds the test's: a Unix socket's path
// must fit in 108 bytes, and the daemons' sockets live deep inside.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "farm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Store items are read-only directories.
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() && fi.Mode()&0o200 == 0 {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("farm: remove %s: %v", dir, err)
		}
	})
	return dir
}
