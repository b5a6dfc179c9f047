package sshexec

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/shlex"

	"offload/statedir"
)

// DefaultDaemonSocket is the remote daemon socket that needs no GUIX_DAEMON_SOCKET.
const DefaultDaemonSocket = "/var/guix/daemon-socket/socket"

// maxOutput bounds what OutputRemote collects.
const maxOutput = 16 << 20

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

// UnreachableError means ssh itself failed (exit status 255): the machine could not be
// reached, refused the key, or showed a host key other than the pinned one.
type UnreachableError struct {
	Machine    string
	Port       int
	StderrTail string // the end of ssh's stderr
	// HostKeyMismatch is set when the host showed a key other than the pinned one;
	// PinnedType is the pinned key's type ("ssh-ed25519") and OfferedType the type ssh
	// reported for the key the host sent ("ED25519"), "" when unknown.
	HostKeyMismatch bool
	PinnedType      string
	OfferedType     string
}

// TargetError is a failure about a machine that names it: machine 'NAME:PORT': ERR.
type TargetError struct {
	Machine string // NAME:PORT
	Err     error
}

func (e *TargetError) Error() string { return fmt.Sprintf("machine '%s': %v", e.Machine, e.Err) }
func (e *TargetError) Unwrap() error { return e.Err }
func (e *TargetError) namesMachine() {}

func (t Target) errorf(format string, args ...any) error {
	return &TargetError{Machine: display(t.Name, t.port()), Err: fmt.Errorf(format, args...)}
}

// machineNamer is an error whose message names its machine already.
type machineNamer interface{ namesMachine() }

func (*UnreachableError) namesMachine() {}
func (*RemoteError) namesMachine()      {}
func (*NoHostKeyError) namesMachine()   {}

// NamesMachine tells whether err's message names its machine already (every error of
// this package about a target does), so that a caller does not name it again.
func NamesMachine(err error) bool {
	var n machineNamer
	return errors.As(err, &n)
}

// display names a machine in messages: NAME:PORT, the one form every message uses.
func display(name string, port int) string {
	if port == 0 {
		port = 22
	}
	return fmt.Sprintf("%s:%d", name, port)
}

func (e *UnreachableError) Error() string {
	if e.HostKeyMismatch {
		offered := e.OfferedType
		if offered == "" {
			offered = "unknown"
		}
		return fmt.Sprintf("machine '%s' presented a host key (type %s) that does not match its pinned host-key (type %s) in machines.scm: refusing to connect; if the machine's key really changed, get the new one with `ssh-keyscan -p %d %s` and update host-key",
			display(e.Machine, e.Port), offered, e.PinnedType, e.Port, e.Machine)
	}
	msg := fmt.Sprintf("cannot reach or authenticate to machine '%s'", display(e.Machine, e.Port))
	if t := LastLines(e.StderrTail, 3); t != "" {
		msg += ": " + t
	}
	return msg
}

// RemoteError means the remote command ran and exited with a non-zero status.
// (A remote status of 255 cannot be told from ssh's own failure and is reported as
// *UnreachableError.)
type RemoteError struct {
	Machine    string
	Command    string // the remote command, quoted
	Code       int
	StderrTail string
}

func (e *RemoteError) Error() string {
	msg := fmt.Sprintf("machine '%s': %s exited with status %d", e.Machine, shorten(e.Command), e.Code)
	if t := LastLines(e.StderrTail, 3); t != "" {
		msg += ": " + t
	}
	return msg
}

// NoHostKeyError is a machine without a host-key when the user did not opt in to their
// own known_hosts.
type NoHostKeyError struct {
	Machine string
	Port    int
}

func (e *NoHostKeyError) Error() string {
	return fmt.Sprintf("machine '%s' has no host-key in machines.scm: run `ssh-keyscan -p %d %s` and put one of the keys it prints (e.g. \"ssh-ed25519 AAAA...\", without the host name) in the machine's host-key field",
		display(e.Machine, e.Port), e.Port, e.Machine)
}

// SSHArgv returns the ssh command line that runs remote on t. It checks its arguments
// but touches no file: RunRemote writes the pinned known-hosts file and creates the
// control directory before it starts the command.
func (r *Runner) SSHArgv(t Target, remote []string) ([]string, error) {
	if len(remote) == 0 {
		return nil, t.errorf("empty remote command")
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
		return nil, t.errorf("invalid port %d", t.Port)
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
		return nil, t.errorf("ssh-options: %w", err)
	}
	argv = append(argv, opts...)
	argv = append(argv, extra...)
	argv = append(argv, "--", t.Name)
	if len(remote) > 0 {
		argv = append(argv, remoteCommand(t, remote))
	}
	return argv, nil
}

// hostKeyOptions pins t's host key: only the key of machines.scm is accepted, from
// our own known-hosts file, never updated; without a host-key, the user's own
// known_hosts only when the runner opts in.
func (r *Runner) hostKeyOptions(t Target) ([]string, error) {
	switch {
	case t.HostKey != "":
		if _, err := ParseHostKey(t.HostKey); err != nil {
			return nil, t.errorf("host-key %w", err)
		}
		file, alias, err := r.knownHosts(t)
		if err != nil {
			return nil, err
		}
		return []string{
			"-o", "StrictHostKeyChecking=yes",
			"-o", "UserKnownHostsFile=" + file,
			"-o", "GlobalKnownHostsFile=/dev/null",
			"-o", "HostKeyAlias=" + alias,
			"-o", "UpdateHostKeys=no",
		}, nil
	case r.UseKnownHosts:
		return []string{"-o", "StrictHostKeyChecking=yes"}, nil
	}
	return nil, &NoHostKeyError{Machine: t.Name, Port: t.port()}
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

// KnownHostsFile returns the known-hosts file that pins t's host key.
func (r *Runner) KnownHostsFile(t Target) (string, error) {
	file, _, err := r.knownHosts(t)
	return file, err
}

func (r *Runner) knownHosts(t Target) (file, alias string, err error) {
	if r.StateDir == "" {
		return "", "", errors.New("host key pinning: no state directory")
	}
	alias = hostAlias(t)
	file = statedir.Layout{Dir: r.StateDir}.KnownHosts(alias)
	if err := checkPathForSSH("known-hosts file", file); err != nil {
		return "", "", err
	}
	return file, alias, nil
}

var plainHostName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]*$`)

// hostAlias names a machine (name and port) in our known-hosts files: readable for
// plain host names, a hash for anything else (IPv6 addresses, odd names).
func hostAlias(t Target) string {
	name := t.Name
	if !plainHostName.MatchString(name) || len(name) > 100 {
		sum := sha256.Sum256([]byte(name))
		name = "h" + hex.EncodeToString(sum[:8])
	}
	return name + "_" + strconv.Itoa(t.port())
}

// ParseHostKey checks an OpenSSH public key line, "TYPE BASE64 [COMMENT]" as in
// /etc/ssh/ssh_host_ed25519_key.pub, whose base64 blob starts with TYPE, and returns
// TYPE. The error says what is wrong, to follow "host-key ".
func ParseHostKey(line string) (string, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return "", fmt.Errorf("%q is not a public key line \"TYPE BASE64 [comment]\" (as in /etc/ssh/ssh_host_ed25519_key.pub)", line)
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		return "", fmt.Errorf("of type %s: invalid base64", f[0])
	}
	if len(blob) < 4 {
		return "", fmt.Errorf("of type %s is truncated", f[0])
	}
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) || string(blob[4:4+n]) != f[0] {
		return "", fmt.Errorf("does not hold a key of type %s", f[0])
	}
	return f[0], nil
}

// prepare does what must be in place before ssh runs for t: the identity file exists,
// the pinned key is written, the control directory exists.
func (r *Runner) prepare(t Target) error {
	if t.PrivateKey != "" {
		st, err := os.Stat(t.PrivateKey)
		if err != nil {
			return t.errorf("private key: %w", err)
		}
		if !st.Mode().IsRegular() {
			return t.errorf("private key %s is not a regular file", t.PrivateKey)
		}
	}
	if t.HostKey != "" {
		file, alias, err := r.knownHosts(t)
		if err != nil {
			return err
		}
		f := strings.Fields(t.HostKey)
		if err := writeIfChanged(file, []byte(alias+" "+f[0]+" "+f[1]+"\n")); err != nil {
			return t.errorf("pin host key: %w", err)
		}
	}
	if r.ControlPersist >= 0 {
		dir, err := r.ControlDir()
		if err != nil {
			return err
		}
		if err := privateDir(dir); err != nil {
			return fmt.Errorf("ssh control directory: %w", err)
		}
	}
	return nil
}

// privateDir makes sure dir exists as a directory of ours that nobody else can enter.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if uid := fileUID(st); uid != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not to us (uid %d)", dir, uid, os.Geteuid())
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// writeIfChanged atomically replaces file with data (mode 0600, in a 0700 directory)
// unless it already holds exactly data.
func writeIfChanged(file string, data []byte) error {
	if old, err := os.ReadFile(file); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := privateDir(filepath.Dir(file)); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// RunRemote runs remote on t over ssh with the given streams and waits for it.
// Errors: *NoHostKeyError, a missing private key (before anything is started),
// *UnreachableError when ssh failed, *RemoteError when the remote command failed, and
// ctx.Err() wrapped when ctx was cancelled (ssh and its process group are killed).
//
// Cancelling stops the local side only: OpenSSH sends no signal to a remote command
// that has no terminal, so it runs on until it notices its closed streams (over a
// shared connection, until it ends). Callers that must stop remote work kill it
// remotely.
func (r *Runner) RunRemote(ctx context.Context, t Target, remote []string, stdio Stdio) error {
	argv, err := r.SSHArgv(t, remote)
	if err != nil {
		return err
	}
	if err := r.prepare(t); err != nil {
		return err
	}
	if err := r.ensureMaster(ctx, t); err != nil {
		return err
	}
	return r.sshError(t, remote, r.run(ctx, argv, stdio))
}

// sshError turns the error of an ssh command into the package's typed errors.
func (r *Runner) sshError(t Target, remote []string, err error) error {
	if err == nil {
		return nil
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code < 0 {
		return t.errorf("%w", err)
	}
	if ee.Code == 255 || remote == nil {
		return r.unreachable(t, ee.StderrTail)
	}
	return &RemoteError{Machine: display(t.Name, t.port()), Command: QuoteCommand(remote), Code: ee.Code, StderrTail: ee.StderrTail}
}

var (
	offeredKeyRE = regexp.MustCompile(`The fingerprint for the (\S+) key sent by the remote host is`)
	unknownKeyRE = regexp.MustCompile(`No (\S+) host key is known for`)
)

// unreachable turns ssh's stderr into an *UnreachableError, recognising a host key
// that is not the pinned one.
func (r *Runner) unreachable(t Target, stderr string) error {
	e := &UnreachableError{Machine: t.Name, Port: t.port(), StderrTail: stderr}
	if t.HostKey == "" {
		return e
	}
	if m := offeredKeyRE.FindStringSubmatch(stderr); m != nil {
		e.HostKeyMismatch, e.OfferedType = true, m[1]
	} else if m := unknownKeyRE.FindStringSubmatch(stderr); m != nil {
		e.HostKeyMismatch, e.OfferedType = true, m[1]
	} else if strings.Contains(stderr, "Host key verification failed") {
		e.HostKeyMismatch = true
	}
	if e.HostKeyMismatch {
		e.PinnedType, _ = ParseHostKey(t.HostKey)
	}
	return e
}

// OutputRemote runs remote on t like RunRemote and returns its standard output, which
// must be small (at most 16 MiB).
func (r *Runner) OutputRemote(ctx context.Context, t Target, remote []string, stdin io.Reader) ([]byte, error) {
	var out limitedBuffer
	err := r.RunRemote(ctx, t, remote, Stdio{Stdin: stdin, Stdout: &out})
	return out.buf.Bytes(), err
}

type limitedBuffer struct{ buf bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.buf.Len()+len(p) > maxOutput {
		return 0, fmt.Errorf("remote output exceeds %d bytes", maxOutput)
	}
	return b.buf.Write(p)
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
		return "", t.errorf("ssh -O %s: %w", cmd, err)
	}
	return stderr.String(), nil
}
