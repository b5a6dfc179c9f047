package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// maxOutput bounds what OutputRemote collects.
const maxOutput = 16 << 20

// prepare does what must be in place before ssh runs for t: the identity file exists,
// the pinned key is written, the control directory exists.
func (r *Runner) prepare(t Target) error {
	if t.PrivateKey != "" {
		if err := CheckPrivateKey(t.PrivateKey); err != nil {
			return err
		}
	}
	if t.HostKey != "" {
		file, alias, err := r.knownHosts(t)
		if err != nil {
			return err
		}
		f := strings.Fields(t.HostKey)
		if err := writeIfChanged(file, []byte(alias+" "+f[0]+" "+f[1]+"\n")); err != nil {
			return fmt.Errorf("pin host key: %w", err)
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

// CheckPrivateKey says what is wrong with an identity file that ssh cannot use: the one
// text for a missing private key, whoever finds it (the hook before connecting,
// `offload machines` when reading the file). It wraps the fs error (fs.ErrNotExist).
func CheckPrivateKey(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &privateKeyError{fmt.Sprintf("private-key %s does not exist: create it (`ssh-keygen -t ed25519 -f %s`) or set private-key to a key the machine accepts", path, path), err}
	case err != nil:
		return fmt.Errorf("private-key: %w", err)
	case !st.Mode().IsRegular():
		return fmt.Errorf("private-key %s is not a regular file", path)
	}
	return nil
}

// privateKeyError is a message of its own over the fs error it unwraps to.
type privateKeyError struct {
	msg string
	err error
}

func (e *privateKeyError) Error() string { return e.msg }
func (e *privateKeyError) Unwrap() error { return e.err }

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
