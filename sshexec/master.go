package sshexec

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"offload/locking"
	"offload/statedir"
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
		return fmt.Errorf("lock for the shared ssh connection: %w", err)
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

// ControlDir returns the directory of the ssh control sockets (statedir.Layout.ControlDir).
func (r *Runner) ControlDir() (string, error) {
	if r.StateDir == "" {
		return "", errors.New("ssh connection sharing: no state directory")
	}
	dir := statedir.Layout{Dir: r.StateDir}.ControlDir()
	if err := checkPathForSSH("control directory", dir); err != nil {
		return "", err
	}
	return dir, nil
}

// controlSocket returns the path of the control socket shared by commands to t. The name
// is a hash of everything that makes a connection (not ssh's %C, which leaves out the
// identity and the options), so that ssh's socket path stays short and predictable.
func (r *Runner) controlSocket(t Target) (string, error) {
	dir, err := r.ControlDir()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, s := range append([]string{t.Name, strconv.Itoa(t.port()), t.User, t.PrivateKey, t.HostKey, t.Compression}, t.SSHOptions...) {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return filepath.Join(dir, hex.EncodeToString(h.Sum(nil))[:socketNameLen]), nil
}

// CloseMaster asks the shared connection to t, if there is one, to exit.
func (r *Runner) CloseMaster(t Target) error {
	if r.ControlPersist < 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.control(ctx, t, "exit")
	return err
}

// MasterPID returns the process id of the shared connection's master for t, or 0 when
// there is none.
func (r *Runner) MasterPID(ctx context.Context, t Target) (int, error) {
	if r.ControlPersist < 0 {
		return 0, nil
	}
	out, err := r.control(ctx, t, "check")
	if err != nil {
		return 0, err
	}
	m := regexp.MustCompile(`pid=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		return 0, nil
	}
	return strconv.Atoi(m[1])
}

// control runs `ssh -O cmd` for t and returns ssh's stderr; no master is not an error.
func (r *Runner) control(ctx context.Context, t Target, cmd string) (string, error) {
	argv, err := r.sshArgv(t, []string{"-O", cmd}, nil)
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	err = r.run(ctx, argv, Stdio{Stderr: &stderr})
	var ee *ExitError
	if errors.As(err, &ee) {
		s := stderr.String()
		if strings.Contains(s, "No such file or directory") || strings.Contains(s, "Connection refused") {
			return "", nil // no master, or a dead one's socket
		}
	}
	if err != nil {
		return "", fmt.Errorf("ssh -O %s: %w", cmd, err)
	}
	return stderr.String(), nil
}
