package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"offload/machines"
	"offload/sshexec"
	"offload/statedir"
	"offload/workerproto"
)

// The two ways an offload reaches a machine (docs/hook.md, "Two paths"):
//
//   - the daemon path speaks guix-daemon's own protocol to the machine's daemon, through
//     a Unix socket forwarded by the shared ssh connection: no remote shell and no Guile
//     start for the offload itself (daemon_offload.go);
//   - the shell path runs one remote shell script that drives `guix archive` and `guix
//     build` (session.go, scripts.go): for machines whose sshd refuses the forward, whose
//     daemon socket is elsewhere, or whose daemon speaks a protocol we do not know.
//
// Which one a machine gets is decided once and remembered in its path file; a machine
// on the shell path is tried again after pathRecheck, since its administrator may have
// fixed it.
const (
	pathDaemon = "daemon"
	pathShell  = "shell"
)

// PathEnv forces a path for every machine: "daemon", "shell", or "" / "auto" to decide.
const PathEnv = "OFFLOAD_PATH"

// pathRecheck is how long a machine stays on the shell path before the daemon path is
// tried again.
const pathRecheck = time.Hour

// PathRecord is what the path file of a machine holds.
type PathRecord struct {
	Path    string    `json:"path"`
	Why     string    `json:"why,omitempty"`
	Checked time.Time `json:"checked"`
}

// pathFile is where m's path is remembered: beside its state file, keyed like it by the
// connection settings, so that an edited machines file is tried afresh.
func (h *Hook) pathFile(m *machines.Machine) string {
	return h.layout.MachineState(m.StateKey()) + ".path"
}

// ReadPath returns what is remembered of m's path (the zero record when nothing is).
func ReadPath(stateDir string, m *machines.Machine) PathRecord {
	h := &Hook{Conf: Config{StateDir: stateDir}}
	h.init()
	return h.readPath(m)
}

// RememberPath records m's path for the hooks (as `offload test` finds it), silently.
func RememberPath(stateDir string, m *machines.Machine, rec PathRecord) {
	h := &Hook{Conf: Config{StateDir: stateDir}, dryRun: false, Out: io.Discard}
	h.init()
	h.rememberPath(m, rec)
}

func (h *Hook) readPath(m *machines.Machine) PathRecord {
	var rec PathRecord
	if b, err := os.ReadFile(h.pathFile(m)); err == nil {
		json.Unmarshal(b, &rec)
	}
	return rec
}

// rememberPath writes m's path, and says so when it changed.
func (h *Hook) rememberPath(m *machines.Machine, rec PathRecord) {
	old := h.readPath(m)
	if h.dryRun {
		return
	}
	if b, err := json.Marshal(rec); err == nil {
		file := h.pathFile(m)
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err == nil {
			statedir.WriteAtomic(file, b) // best effort: without it, the path is found again
		}
	}
	if old.Path == rec.Path && old.Why == rec.Why {
		return
	}
	switch rec.Path {
	case pathDaemon:
		h.note("machine '%s': offloading through its guix-daemon's socket, forwarded by ssh", m.Display())
	case pathShell:
		h.note("machine '%s': offloading through a remote shell (slower): %s", m.Display(), rec.Why)
	}
}

// daemonSocket is m's remote daemon socket.
func daemonSocket(m *machines.Machine) string {
	if m.DaemonSocket != "" {
		return m.DaemonSocket
	}
	return sshexec.DefaultDaemonSocket
}

// daemonPathLikely tells whether an offload to m will take the daemon path: forced, or
// remembered (and not forced to the shell).
func (h *Hook) daemonPathLikely(m *machines.Machine) bool {
	switch h.Conf.Path {
	case pathShell:
		return false
	case pathDaemon:
		return true
	}
	return h.readPath(m).Path == pathDaemon
}

// openDaemon connects to m's daemon through the shared ssh connection when m is to use
// the daemon path. conn is nil when the shell path must be used (the reason is
// remembered and said once); err is a failure of the machine itself (ssh cannot reach
// it, or its daemon hangs), which the caller treats like any failure before the build.
func (h *Hook) openDaemon(ctx context.Context, m *machines.Machine, t sshexec.Target) (conn *workerproto.Conn, err error) {
	switch h.Conf.Path {
	case pathShell:
		return nil, nil
	case pathDaemon:
	default:
		if rec := h.readPath(m); rec.Path == pathShell && h.Now().Sub(rec.Checked) < pathRecheck {
			return nil, nil
		}
	}
	conn, why, err := DialMachineDaemon(ctx, h.Runner, t, daemonSocket(m))
	if err != nil {
		return nil, err
	}
	if conn == nil {
		if h.Conf.Path == pathDaemon {
			return nil, errors.New(why)
		}
		h.rememberPath(m, PathRecord{Path: pathShell, Why: why, Checked: h.Now()})
		return nil, nil
	}
	h.rememberPath(m, PathRecord{Path: pathDaemon, Checked: h.Now()})
	conn.Trace = h.traceOp(m)
	return conn, nil
}

// daemonHandshakeTimeout bounds the forward and the handshake: a daemon that accepts
// and never greets is hung.
const daemonHandshakeTimeout = 30 * time.Second

// DialMachineDaemon reaches the daemon at socket on t through r's shared ssh connection
// and does the handshake. It returns a nil conn and why (a sentence with its fix) when
// the daemon path cannot be used on this machine, and an error when the machine itself
// failed (ssh could not reach it, or the daemon hung).
func DialMachineDaemon(ctx context.Context, r *sshexec.Runner, t sshexec.Target, socket string) (conn *workerproto.Conn, why string, err error) {
	if r.ControlPersist < 0 {
		return nil, "ssh connection sharing is off, and the daemon's socket is forwarded by the shared connection", nil
	}
	hctx, cancel := context.WithTimeout(ctx, daemonHandshakeTimeout)
	defer cancel()
	nc, err := r.ForwardSocket(hctx, t, socket)
	if err != nil {
		return nil, "", err
	}
	conn, err = workerproto.NewConn(hctx, nc)
	switch {
	case err == nil:
		return conn, "", nil
	case errors.Is(err, workerproto.ErrNoDaemon):
		nc.Close()
		return nil, fmt.Sprintf("its sshd refuses to forward to %s, or no guix-daemon listens there "+
			"(allow it with 'AllowTcpForwarding yes' in sshd_config, or (allow-tcp-forwarding? #t) on Guix System, "+
			"and no 'restrict' on the key; or set daemon-socket in machines.scm)", socket), nil
	case errors.Is(err, workerproto.ErrIncompatible), errors.Is(err, workerproto.ErrNotADaemon):
		nc.Close()
		return nil, fmt.Sprintf("its guix-daemon at %s: %v", socket, err), nil
	}
	nc.Close()
	return nil, "", fmt.Errorf("guix-daemon at %s: %w", socket, err)
}

// traceOp prints, under -v, one line per protocol operation with m's daemon.
func (h *Hook) traceOp(m *machines.Machine) func(op string, paths int, bytes int64, d time.Duration, err error) {
	if h.Runner == nil || h.Runner.Trace == nil {
		return nil
	}
	w := h.Runner.Trace
	name := m.Display()
	return func(op string, paths int, bytes int64, d time.Duration, err error) {
		status := "ok"
		if err != nil {
			status = err.Error()
		}
		fmt.Fprintf(w, "+ daemon %s: %s paths=%d bytes=%d %.1fms: %s\n", name, op, paths, bytes, float64(d.Microseconds())/1000, status)
	}
}
