package sshexec

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Errors of this package say what went wrong with a machine, never which machine: the
// caller that chose the machine names it once, at one boundary ("machine 'NAME:PORT': ").
// The fields that a message or a fix needs (the name and port for `ssh-keyscan`) are
// there for the message, not to name the machine.

// UnreachableError means ssh itself failed (exit status 255): the machine could not be
// reached, refused the key, or showed a host key other than the pinned one.
type UnreachableError struct {
	Machine    string // the host name, for the fix of a host key mismatch
	Port       int
	StderrTail string // the end of ssh's stderr
	// HostKeyMismatch is set when the host showed a key other than the pinned one;
	// PinnedType is the pinned key's type ("ssh-ed25519") and OfferedType the type ssh
	// reported for the key the host sent ("ED25519"), "" when unknown.
	HostKeyMismatch bool
	PinnedType      string
	OfferedType     string
}

func (e *UnreachableError) Error() string {
	if e.HostKeyMismatch {
		offered := e.OfferedType
		if offered == "" {
			offered = "unknown"
		}
		return fmt.Sprintf("its host key (type %s) is not the host-key pinned in machines.scm (type %s): refusing to connect; if the machine's key really changed, put the one `%s` prints in host-key",
			offered, e.PinnedType, keyscan(e.Machine, e.Port))
	}
	msg := "ssh cannot connect or log in"
	if t := LastLines(e.StderrTail, 3); t != "" {
		msg += ": " + t
	}
	return msg
}

// RemoteError means the remote command ran and exited with a non-zero status.
// (A remote status of 255 cannot be told from ssh's own failure and is reported as
// *UnreachableError.)
type RemoteError struct {
	Command    string // the remote command, quoted
	Code       int
	StderrTail string
}

func (e *RemoteError) Error() string {
	msg := fmt.Sprintf("%s exited with status %d", shorten(e.Command), e.Code)
	if t := LastLines(e.StderrTail, 3); t != "" {
		msg += ": " + t
	}
	return msg
}

// NoHostKeyError is a machine without a host-key when the user did not opt in to their
// own known_hosts. Its message says the fix: there is no other place that says it.
type NoHostKeyError struct {
	Machine string // the host name, for the fix
	Port    int
}

func (e *NoHostKeyError) Error() string {
	return fmt.Sprintf("no host-key in machines.scm: put one of the keys that `%s` prints (e.g. \"ssh-ed25519 AAAA...\", without the host name) in host-key",
		keyscan(e.Machine, e.Port))
}

// keyscan is the command that prints a machine's host keys.
func keyscan(name string, port int) string {
	if port == 0 {
		port = 22
	}
	return fmt.Sprintf("ssh-keyscan -p %d %s", port, name)
}

// sshError turns the error of an ssh command into the package's typed errors.
func (r *Runner) sshError(t Target, remote []string, err error) error {
	if err == nil {
		return nil
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code < 0 {
		return err
	}
	if ee.Code == 255 || remote == nil {
		return r.unreachable(t, ee.StderrTail)
	}
	return &RemoteError{Command: QuoteCommand(remote), Code: ee.Code, StderrTail: ee.StderrTail}
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
