package sshexec

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// BuiltinSSH is the ssh program fixed when the binary was built, for a daemon whose
// PATH has no ssh (on Guix System the daemon's PATH holds only tar and gzip):
//
//	go build -ldflags "-X offload/sshexec.BuiltinSSH=/gnu/store/...-openssh-9.8p1/bin/ssh"
//
// guix.scm sets it to its openssh input; `make SSH=/usr/bin/ssh` sets it too.
var BuiltinSSH string

// UsualDirs are searched after PATH: the system profile of Guix System, then the
// directories of a foreign distribution.
var UsualDirs = []string{"/run/current-system/profile/bin", "/usr/bin", "/bin"}

// MissingProgramError is a program this host lacks. It is a problem of this host,
// never of a build machine.
type MissingProgramError struct {
	Program string   // "ssh", "guix"
	Tried   []string // the places looked at, in order
	Env     string   // the variable that names it explicitly, e.g. OFFLOAD_SSH
}

// maxTriedShown is how many of the places looked at a message lists: the first few
// say where offload looks; the whole PATH says nothing more to a reader.
const maxTriedShown = 4

func (e *MissingProgramError) Error() string {
	tried := strings.Join(e.Tried, ", ")
	if n := len(e.Tried); n > maxTriedShown+1 { // "and 1 more" would say less than the name
		tried = fmt.Sprintf("%s and %d more", strings.Join(e.Tried[:maxTriedShown], ", "), n-maxTriedShown)
	}
	return fmt.Sprintf("cannot find the %s program on this host (tried %s); install it or set %s to its absolute file name",
		e.Program, tried, e.Env)
}

// Lookup finds the programs offload runs without relying on PATH alone.
type Lookup struct {
	Getenv func(string) string
	// Self is this program's file; it is never taken for the real guix (offload may
	// be installed as the daemon's GUIX).
	Self string
	// DaemonDir is the directory of the guix-daemon that started us ("" when unknown):
	// the guix beside it is the daemon's own default GUIX.
	DaemonDir string
}

// NewLookup returns the lookup for this process: its environment, its own file and
// the directory of the guix-daemon among its ancestors.
func NewLookup() Lookup {
	self, _ := os.Executable()
	return Lookup{Getenv: os.Getenv, Self: self, DaemonDir: daemonAncestorDir(os.Getppid())}
}

// maxAncestors bounds the walk up the process tree.
const maxAncestors = 32

// daemonAncestorDir returns the directory of guix-daemon's program when process pid or
// one of its ancestors runs it, else "": the daemon may start the hook through a
// wrapper (a shell script that sets the environment, a profile's launcher), so the
// hook's parent is not always the daemon.
func daemonAncestorDir(pid int) string {
	for i := 0; i < maxAncestors && pid > 1; i++ {
		if dir := daemonDir(pid); dir != "" {
			return dir
		}
		pid = parentPID(pid)
	}
	return ""
}

// daemonDir returns the directory of process pid's program when that program is
// guix-daemon, else "".
func daemonDir(pid int) string {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "guix-daemon" {
		return ""
	}
	return filepath.Dir(exe)
}

// parentPID returns the parent of process pid (0 when unknown), from /proc/PID/stat,
// whose second field, the command in parentheses, may itself hold ") ".
func parentPID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndex(s, ") ")
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// SSH finds ssh: $OFFLOAD_SSH, then BuiltinSSH, then PATH, then UsualDirs.
func (l Lookup) SSH() (string, error) {
	return l.find("ssh", "OFFLOAD_SSH", []string{BuiltinSSH}, nil)
}

// Guix finds the real guix: $OFFLOAD_GUIX, then the guix beside the running
// guix-daemon (the daemon's own default), then PATH, then UsualDirs, never this very
// program.
func (l Lookup) Guix() (string, error) {
	var first []string
	if l.DaemonDir != "" {
		first = append(first, filepath.Join(l.DaemonDir, "guix"))
	}
	return l.find("guix", "OFFLOAD_GUIX", first, l.isSelf)
}

func (l Lookup) isSelf(p string) bool {
	if l.Self == "" {
		return false
	}
	a, err1 := os.Stat(p)
	b, err2 := os.Stat(l.Self)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// find returns the first executable among: the file $env names (which must exist when
// set), the files in first, name in each PATH directory, name in each of UsualDirs.
// skip, when not nil, rules out files (this program).
func (l Lookup) find(name, env string, first []string, skip func(string) bool) (string, error) {
	getenv := l.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if p := getenv(env); p != "" {
		if !filepath.IsAbs(p) {
			return "", fmt.Errorf("%s=%s: not an absolute file name", env, p)
		}
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, err)
		}
		return p, nil
	}
	tried := []string{env + " (unset)"}
	cands := append([]string(nil), first...)
	for _, dir := range filepath.SplitList(getenv("PATH")) {
		if filepath.IsAbs(dir) {
			cands = append(cands, filepath.Join(dir, name))
		}
	}
	for _, dir := range UsualDirs {
		cands = append(cands, filepath.Join(dir, name))
	}
	seen := map[string]bool{}
	for _, p := range cands {
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		if executable(p) != nil {
			tried = append(tried, p)
			continue
		}
		if skip != nil && skip(p) {
			tried = append(tried, p+" (this program)")
			continue
		}
		return p, nil
	}
	return "", &MissingProgramError{Program: name, Tried: tried, Env: env}
}

// executable checks that p is a regular file someone may execute.
func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return errors.New("no such file")
		}
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}
