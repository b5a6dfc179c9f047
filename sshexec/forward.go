package sshexec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"offload/locking"
)

// ForwardSocket makes the remote Unix socket remote (the machine's guix-daemon socket)
// reachable through a local Unix socket carried by t's shared ssh connection, and
// returns a connection to it. The local socket sits beside the control socket (same
// root-only directory, so only our user can use it) and lives as long as the master:
// later calls, from this process or others, reuse it without spawning anything.
//
// What ssh cannot tell us: a forward that sshd refuses (AllowTcpForwarding no,
// DisableForwarding, a `restrict` key), or a remote socket that is not there, still
// binds locally and accepts; the refusal shows only as the connection closing at once.
// That is for the caller's protocol to notice (no greeting).
func (r *Runner) ForwardSocket(ctx context.Context, t Target, remote string) (net.Conn, error) {
	if r.ControlPersist < 0 {
		return nil, errors.New("forwarding the daemon socket needs ssh connection sharing, which is off")
	}
	if err := r.Connect(ctx, t); err != nil {
		return nil, err
	}
	sock, err := r.controlSocket(t)
	if err != nil {
		return nil, err
	}
	local := sock + ".daemon"
	if c, err := dialUnix(ctx, local); err == nil {
		return c, nil
	}
	// One process at a time replaces a stale socket (left by an earlier master: ssh
	// never removes its forwards' sockets) and asks the master for the forward.
	lock, err := locking.Acquire(ctx, local+".lock", "forwarding the daemon socket")
	if err != nil {
		return nil, fmt.Errorf("lock for the daemon socket's forward: %w", err)
	}
	defer lock.Release()
	if c, err := dialUnix(ctx, local); err == nil {
		return c, nil // another process forwarded it while we waited
	}
	if err := os.Remove(local); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	argv, err := r.sshArgv(t, []string{"-O", "forward", "-L", local + ":" + remote}, nil)
	if err != nil {
		return nil, err
	}
	tail := NewTail(4 << 10)
	if err := r.run(ctx, argv, Stdio{Stderr: tail}); err != nil {
		return nil, fmt.Errorf("ssh -O forward of %s: %w: %s", remote, err, LastLines(tail.String(), 2))
	}
	return dialUnix(ctx, local)
}

// dialUnix connects to a local Unix socket; a socket file without a listener fails at
// once (ECONNREFUSED).
func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
		return nil, fmt.Errorf("%s: no listener (stale socket)", path)
	}
	return c, err
}
