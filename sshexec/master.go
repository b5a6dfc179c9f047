package sshexec

import (
	"context"
	"net"
	"strconv"
	"time"

	"offload/locking"
)

// ensureMaster makes sure a shared connection to t runs in the background before a
// command uses it.
//
// Commands never become the master themselves: when ssh's ControlMaster=auto makes a
// command's own ssh the master, that command's session lives in the backgrounded master,
// which keeps the caller's stdout and stderr open and the remote command running after
// the command's ssh is killed. So the master is a separate `ssh -n -N -f`, started by one
// process at a time (a lock beside the socket), and commands are always its clients.
func (r *Runner) ensureMaster(ctx context.Context, t Target) error {
	if r.ControlPersist < 0 {
		return nil
	}
	sock, err := r.controlSocket(t)
	if err != nil {
		return err
	}
	if masterAlive(sock) {
		return nil
	}
	lock, err := locking.Acquire(ctx, sock+".lock", "starting the shared ssh connection")
	if err != nil {
		return t.errorf("lock for the shared ssh connection: %w", err)
	}
	defer lock.Release()
	if masterAlive(sock) {
		return nil // another process started it while we waited
	}
	// A socket without a master (the master was killed) is removed by ssh itself:
	// with ControlMaster=auto it finds the connection refused and unlinks it.
	// The master owns the daemon socket's forward (ForwardSocket): it replaces a socket
	// file an earlier master left behind. Keepalives end a master whose machine froze or
	// whose network went dark within about 15 s, and with it every session it carries, so
	// that no offload waits on a dead machine for ever.
	argv, err := r.sshArgv(t, []string{"-n", "-N", "-f",
		"-o", "StreamLocalBindUnlink=yes",
		"-o", "ServerAliveInterval=" + strconv.Itoa(serverAliveInterval),
		"-o", "ServerAliveCountMax=3"}, nil)
	if err != nil {
		return err
	}
	// When ssh connected but could not listen on the socket, commands connect on their
	// own, which works, only slower.
	if err := r.run(ctx, argv, Stdio{}); err != nil {
		return r.sshError(t, nil, err)
	}
	return nil
}

// Connect makes sure t can be reached now, before the hook commits a build to it: a
// live shared connection will do, else it opens one (with sharing off, it runs `true`
// there). The errors are those of RunRemote.
func (r *Runner) Connect(ctx context.Context, t Target) error {
	if r.ControlPersist < 0 {
		return r.RunRemote(ctx, t, []string{"true"}, Stdio{})
	}
	if _, err := r.SSHArgv(t, []string{"true"}); err != nil {
		return err
	}
	if err := r.prepare(t); err != nil {
		return err
	}
	return r.ensureMaster(ctx, t)
}

// serverAliveInterval is the master's keepalive period in seconds (three missed
// answers end it).
const serverAliveInterval = 5

// masterAlive reports whether a master listens on sock.
func masterAlive(sock string) bool {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}
