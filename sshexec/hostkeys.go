package sshexec

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"offload/statedir"
)

// hostKeyOptions pins t's host key: only the key of machines.scm is accepted, from
// our own known-hosts file, never updated; without a host-key, the user's own
// known_hosts only when the runner opts in.
func (r *Runner) hostKeyOptions(t Target) ([]string, error) {
	switch {
	case t.HostKey != "":
		if _, err := ParseHostKey(t.HostKey); err != nil {
			return nil, fmt.Errorf("host-key %w", err)
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
