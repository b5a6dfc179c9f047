package sshexec

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

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
