package machines

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"offload/sshexec"
)

// LintFiles checks what Parse cannot: each host-key must be an OpenSSH public
// key line (ssh cannot pin anything else, so that is an error), and each
// private key must exist, be a readable regular file, and be closed to
// group and others (OpenSSH ignores a key that its owner left open). A key
// that is missing or not a file is an error; one this user cannot read is an
// error when we run as root (as the hook does) and a warning otherwise, since
// the hook may well read it; open permissions are a warning. Each key is
// checked once, at the first machine that names it.
func LintFiles(ms []*Machine) (warnings []Warning, errs []*Error) {
	seen := map[string]bool{}
	for _, m := range ms {
		if m.HostKey != "" {
			if msg := checkHostKey(m.HostKey); msg != "" {
				errs = append(errs, &Error{Pos: m.Pos, Msg: fmt.Sprintf("machine '%s': host-key %s", m.ID(), msg)})
			}
		}
		key := m.PrivateKey
		if seen[key] {
			continue
		}
		seen[key] = true
		if key == "" {
			warnings = append(warnings, Warning{Pos: m.Pos, Msg: fmt.Sprintf(
				"machine '%s' has no private-key and there is no home directory for the default ~/.ssh/id_rsa: ssh will choose a key", m.ID())})
			continue
		}
		w, e := lintKey(m, key, os.Geteuid())
		if w != "" {
			warnings = append(warnings, Warning{Pos: m.Pos, Msg: w})
		}
		if e != "" {
			errs = append(errs, &Error{Pos: m.Pos, Msg: e})
		}
	}
	return warnings, errs
}

// lintKey checks one private key file as user euid; it returns a warning, an
// error, or neither.
func lintKey(m *Machine, key string, euid int) (warning, errMsg string) {
	st, err := os.Stat(key)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// The hook says the same when it is about to connect.
		return "", fmt.Sprintf("machine '%s': %v", m.ID(), sshexec.CheckPrivateKey(key))
	case errors.Is(err, fs.ErrPermission):
		return unreadable(m, key, euid)
	case err != nil:
		return "", fmt.Sprintf("machine '%s': private-key: %v", m.ID(), err)
	case !st.Mode().IsRegular():
		return "", fmt.Sprintf("machine '%s': private-key %s is not a regular file", m.ID(), key)
	}
	f, err := os.Open(key)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return unreadable(m, key, euid)
		}
		return "", fmt.Sprintf("machine '%s': private-key: %v", m.ID(), err)
	}
	f.Close()
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		owner := ""
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf(" (owner uid %d)", sys.Uid)
		}
		return fmt.Sprintf("machine '%s': private-key %s%s has mode %04o, open to group or others: ssh refuses such a key for its owner; run `chmod 600 %s`",
			m.ID(), key, owner, perm, key), ""
	}
	return "", ""
}

func unreadable(m *Machine, key string, euid int) (warning, errMsg string) {
	if euid == 0 {
		return "", fmt.Sprintf("machine '%s': private-key %s cannot be read: permission denied", m.ID(), key)
	}
	return fmt.Sprintf("machine '%s': private-key %s cannot be read by this user (uid %d); the hook runs as the daemon's user, usually root, which may read it",
		m.ID(), key, euid), ""
}

// checkHostKey checks a host-key as ssh will need it (sshexec.ParseHostKey); it
// returns what is wrong, or "".
func checkHostKey(line string) string {
	if _, err := sshexec.ParseHostKey(line); err != nil {
		return err.Error()
	}
	return ""
}
