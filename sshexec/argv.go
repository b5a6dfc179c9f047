package sshexec

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/shlex"
)

// DefaultDaemonSocket is the remote daemon socket that needs no GUIX_DAEMON_SOCKET.
const DefaultDaemonSocket = "/var/guix/daemon-socket/socket"

// socketNameLen is the length of a control socket's name (hex digits of a hash).
const socketNameLen = 24

// Target is one build machine as ssh sees it.
type Target struct {
	Name       string // host name to connect to
	Port       int    // 0 means 22
	User       string // "" lets ssh choose
	PrivateKey string // identity file; "" lets ssh choose
	// HostKey is the machine's pinned public host key, "TYPE BASE64 [comment]" as in
	// /etc/ssh/ssh_host_ed25519_key.pub; "" means none.
	HostKey string
	// Compression "" or "no" turns ssh compression off; anything else turns it on
	// (OpenSSH chooses the method itself).
	Compression string
	// CompressionLevel is kept from machines.scm; OpenSSH has no such setting.
	CompressionLevel int
	// SSHOptions are extra ssh options: several strings are argv words as given; one
	// string is split like a shell would (github.com/google/shlex). They come after the
	// options sshexec sets and OpenSSH keeps the first value of an option, so they can
	// add options but not weaken host key checking.
	SSHOptions []string
	// DaemonSocket is the remote guix-daemon's socket; when not "" and not
	// DefaultDaemonSocket, remote commands run with GUIX_DAEMON_SOCKET set to it.
	DaemonSocket string
}

func (t Target) port() int {
	if t.Port == 0 {
		return 22
	}
	return t.Port
}

// SSHArgv returns the ssh command line that runs remote on t. It checks its arguments
// but touches no file: RunRemote writes the pinned known-hosts file and creates the
// control directory before it starts the command.
func (r *Runner) SSHArgv(t Target, remote []string) ([]string, error) {
	if len(remote) == 0 {
		return nil, fmt.Errorf("empty remote command")
	}
	return r.sshArgv(t, nil, remote)
}

// sshArgv builds ssh's argv: extra goes just before "--" (e.g. -O exit); remote may be
// empty only when extra is not.
func (r *Runner) sshArgv(t Target, extra, remote []string) ([]string, error) {
	if r.NoSSH != nil {
		return nil, r.NoSSH
	}
	if t.Name == "" || strings.HasPrefix(t.Name, "-") || strings.ContainsAny(t.Name, " \t\r\n'\"\\") {
		return nil, fmt.Errorf("invalid machine name %q", t.Name)
	}
	if t.Port < 0 || t.Port > 65535 {
		return nil, fmt.Errorf("invalid port %d", t.Port)
	}
	ssh := r.SSH
	if ssh == "" {
		ssh = "ssh"
	}
	argv := []string{ssh}
	if t.PrivateKey != "" {
		argv = append(argv, "-i", t.PrivateKey)
	}
	if t.User != "" {
		argv = append(argv, "-l", t.User)
	}
	timeout := r.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	compression := "yes"
	if t.Compression == "" || t.Compression == "no" {
		compression = "no"
	}
	argv = append(argv,
		"-p", strconv.Itoa(t.port()),
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-o", "ConnectTimeout="+strconv.Itoa(int((timeout+time.Second-1)/time.Second)),
		"-o", "Compression="+compression,
	)

	hostKey, err := r.hostKeyOptions(t)
	if err != nil {
		return nil, err
	}
	argv = append(argv, hostKey...)
	sharing, err := r.sharingOptions(t)
	if err != nil {
		return nil, err
	}
	argv = append(argv, sharing...)

	opts, err := splitOptions(t.SSHOptions)
	if err != nil {
		return nil, fmt.Errorf("ssh-options: %w", err)
	}
	argv = append(argv, opts...)
	argv = append(argv, extra...)
	argv = append(argv, "--", t.Name)
	if len(remote) > 0 {
		argv = append(argv, remoteCommand(t, remote))
	}
	return argv, nil
}

// sharingOptions makes commands to t share one connection (see ensureMaster), or
// turns sharing off.
func (r *Runner) sharingOptions(t Target) ([]string, error) {
	if r.ControlPersist < 0 {
		return []string{"-o", "ControlMaster=no", "-o", "ControlPath=none"}, nil
	}
	sock, err := r.controlSocket(t)
	if err != nil {
		return nil, err
	}
	persist := r.ControlPersist
	if persist == 0 {
		persist = DefaultControlPersist
	}
	return []string{
		"-o", "ControlMaster=auto",
		"-o", "ControlPersist=" + strconv.Itoa(int((persist+time.Second-1)/time.Second)) + "s",
		"-o", "ControlPath=" + sock,
	}, nil
}

// splitOptions turns machines.scm's ssh-options into argv words.
func splitOptions(opts []string) ([]string, error) {
	if len(opts) != 1 {
		return opts, nil
	}
	words, err := shlex.Split(opts[0])
	if err != nil {
		return nil, fmt.Errorf("cannot split %q: %w", opts[0], err)
	}
	return words, nil
}

// remoteCommand is the one string ssh hands to the remote user's shell.
func remoteCommand(t Target, remote []string) string {
	if t.DaemonSocket != "" && t.DaemonSocket != DefaultDaemonSocket {
		remote = append([]string{"env", "GUIX_DAEMON_SOCKET=" + t.DaemonSocket}, remote...)
	}
	return QuoteCommand(remote)
}

// checkPathForSSH rejects paths that ssh's option parser would split or expand.
func checkPathForSSH(what, p string) error {
	if strings.ContainsAny(p, " \t\r\n'\"\\%") {
		return fmt.Errorf("%s %q: ssh cannot use a path with blanks, quotes, backslashes or %%", what, p)
	}
	return nil
}
