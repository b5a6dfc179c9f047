// Package sshtest starts a throwaway OpenSSH sshd on 127.0.0.1 for tests, with a fresh
// host key and a fresh client key authorized for the current user. It runs
// scripts/test-sshd.sh, so that tests and people use the same server setup.
//
// It owns nothing outside the test's temporary directory and the sshd processes it
// started; it does not pretend to be a build machine (no guix on the far side).
package sshtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"offload/sshexec"
)

// SSHD is the sshd the script starts.
const SSHD = "/usr/sbin/sshd"

// Options says how to start the server.
type Options struct {
	// Env holds variables remote commands see (sshd's SetEnv), e.g. PATH. Values may
	// hold spaces but no double quotes.
	Env map[string]string
	// DisableForwarding makes the server refuse every forward (DisableForwarding yes),
	// Unix-socket forwards included; by default it allows them.
	DisableForwarding bool
}

// Server is a running sshd.
type Server struct {
	Dir       string // holds sshd_config, the keys, sshd.pid and sshd.log
	Port      int
	HostKey   string // "ssh-ed25519 AAAA... comment"
	ClientKey string // private key file authorized to log in
	User      string // the current user, whom the client key logs in as
}

// NeedTool ends the test when program cannot be found: it fails when the CI
// environment variable is set (a missing tool must not pass silently there), and skips
// otherwise.
func NeedTool(t testing.TB, program string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required for this test: %v", program, err)
	}
	t.Skipf("%s not found, skipping: %v", program, err)
	return ""
}

// Start starts a new sshd; it is stopped when the test ends.
func Start(t testing.TB, opt Options) *Server {
	t.Helper()
	NeedTool(t, SSHD)
	NeedTool(t, "ssh-keygen")
	script, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{script, filepath.Join(dir, "sshd")}
	if len(opt.Env) > 0 {
		keys := make([]string, 0, len(opt.Env))
		for k := range opt.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s\n", k, opt.Env[k])
		}
		envFile := filepath.Join(dir, "env")
		if err := os.WriteFile(envFile, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, envFile)
	}
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = append(os.Environ(), "TEST_SSHD_DISABLE_FORWARDING=0")
	if opt.DisableForwarding {
		cmd.Env[len(cmd.Env)-1] = "TEST_SSHD_DISABLE_FORWARDING=1"
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v: %s", script, err, stderr.String())
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Dir: filepath.Join(dir, "sshd"), User: u.Username}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "port":
			s.Port, err = strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s: bad port line %q", script, sc.Text())
			}
		case "hostkey":
			s.HostKey = v
		case "key":
			s.ClientKey = v
		}
	}
	t.Cleanup(s.Stop)
	if s.Port == 0 || s.HostKey == "" || s.ClientKey == "" {
		t.Fatalf("%s: incomplete output:\n%s", script, out)
	}
	return s
}

// Script returns the path of scripts/test-sshd.sh, found by walking up from the
// working directory to the module root (the directory holding go.mod).
func Script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "scripts", "test-sshd.sh"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Target is a target that logs in to the server with its client key and pins its host
// key.
func (s *Server) Target() sshexec.Target {
	return sshexec.Target{
		Name:       "127.0.0.1",
		Port:       s.Port,
		User:       s.User,
		PrivateKey: s.ClientKey,
		HostKey:    s.HostKey,
	}
}

// Log returns sshd's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "sshd.log"))
	return string(b)
}

// pid returns the listener's pid, 0 when it does not run.
func (s *Server) pid() int {
	b, err := os.ReadFile(filepath.Join(s.Dir, "sshd.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// Stop kills sshd, the listener and every session process under it, as if the machine
// went down. It may be called more than once.
func (s *Server) Stop() {
	pid := s.pid()
	if pid == 0 {
		return
	}
	// Collect the whole tree before killing: killed parents' children would move to
	// init and be lost from view.
	tree := Descendants(pid)
	syscall.Kill(pid, syscall.SIGKILL)
	for _, p := range tree {
		syscall.Kill(p, syscall.SIGKILL)
	}
	for i := 0; i < 500 && (alive(pid) || listening(s.Port)); i++ {
		time.Sleep(10 * time.Millisecond)
	}
}

// Signal sends sig to sshd's listener and every session process under it (SIGSTOP: the
// machine froze; SIGCONT: it thaws), not to the clients talking to it.
func (s *Server) Signal(sig syscall.Signal) {
	pid := s.pid()
	if pid == 0 {
		return
	}
	for _, p := range append([]int{pid}, Descendants(pid)...) {
		syscall.Kill(p, sig)
	}
}

// Restart starts sshd again on the same port with the same keys.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	os.Remove(filepath.Join(s.Dir, "sshd.pid"))
	cmd := exec.Command(SSHD, "-f", filepath.Join(s.Dir, "sshd_config"), "-E", filepath.Join(s.Dir, "sshd.log"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restart sshd: %v: %s", err, out)
	}
	for i := 0; i < 1000; i++ {
		if s.pid() != 0 && listening(s.Port) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("restarted sshd does not listen on port %d; log:\n%s", s.Port, s.Log())
}

func alive(pid int) bool {
	// A zombie is not alive for our purpose; /proc/PID/stat state Z.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// Descendants returns the pids of all living descendants of pid, read from /proc.
func Descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := PPid(p); pp > 0 {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}

// PPid returns the parent pid of pid from /proc, 0 if pid is gone.
func PPid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name in parentheses may contain spaces; fields follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// listening reports whether something listens on TCP port on any address.
func listening(port int) bool {
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) > 3 && fs[3] == "0A" && strings.HasSuffix(fs[1], want) {
				return true
			}
		}
	}
	return false
}
