package sshexec_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"offload/sshexec"
	"offload/sshexec/sshtest"
)

// setup starts an sshd and returns a runner with its own state directory; the shared
// connection and its directory are removed when the test ends.
func setup(t testing.TB) (*sshtest.Server, *sshexec.Runner) {
	t.Helper()
	sshtest.NeedTool(t, "ssh")
	s := sshtest.Start(t, sshtest.Options{Env: map[string]string{"OFFLOAD_TEST_VAR": "from sshd"}})
	r := &sshexec.Runner{StateDir: filepath.Join(t.TempDir(), "offload")}
	t.Cleanup(func() {
		r.CloseMaster(s.Target())
		if dir, err := r.ControlDir(); err == nil {
			os.RemoveAll(dir)
		}
	})
	return s, r
}

func output(t *testing.T, r *sshexec.Runner, m sshexec.Target, remote ...string) string {
	t.Helper()
	out, err := r.OutputRemote(context.Background(), m, remote, nil)
	if err != nil {
		t.Fatalf("%q: %v", remote, err)
	}
	return string(out)
}

func TestRemoteRunsAsUserWithKeyAndPort(t *testing.T) {
	s, r := setup(t)
	if got := output(t, r, s.Target(), "id", "-un"); strings.TrimSpace(got) != s.User {
		t.Errorf("remote user %q, want %q", got, s.User)
	}
	if got := output(t, r, s.Target(), "printenv", "OFFLOAD_TEST_VAR"); got != "from sshd\n" {
		t.Errorf("remote environment: OFFLOAD_TEST_VAR=%q", got)
	}
	// sshd logged our client key's fingerprint on its port.
	fp, err := exec.Command("ssh-keygen", "-l", "-f", s.ClientKey+".pub").Output()
	if err != nil {
		t.Fatal(err)
	}
	sha := strings.Fields(string(fp))[1]
	log := s.Log()
	if !strings.Contains(log, "Accepted publickey for "+s.User+" from 127.0.0.1") || !strings.Contains(log, sha) {
		t.Errorf("sshd.log has no accepted login with key %s:\n%s", sha, log)
	}
}

func TestRemoteQuoting(t *testing.T) {
	s, r := setup(t)
	args := []string{"plain", "", "with space", "it's", `"double"`, "$HOME", "`id`", "$(id)", "a;b", "a\nb",
		`back\slash`, `\`, "'", "*", "~", "#x", "a=b", "-n", "--", "\t", "!", "{a,b}", "trailing\\"}
	out := output(t, r, s.Target(), append([]string{"printf", `%s\0`}, args...)...)
	got := strings.Split(strings.TrimSuffix(out, "\x00"), "\x00")
	if len(got) != len(args) {
		t.Fatalf("remote got %d args %q, want %q", len(got), got, args)
	}
	for i := range args {
		if got[i] != args[i] {
			t.Errorf("arg %d: remote got %q, want %q", i, got[i], args[i])
		}
	}
}

func TestRemoteDaemonSocket(t *testing.T) {
	s, r := setup(t)
	m := s.Target()
	m.DaemonSocket = "/run/my guix/socket"
	if got := output(t, r, m, "printenv", "GUIX_DAEMON_SOCKET"); got != "/run/my guix/socket\n" {
		t.Errorf("GUIX_DAEMON_SOCKET=%q", got)
	}
	m.DaemonSocket = sshexec.DefaultDaemonSocket
	if _, err := r.OutputRemote(context.Background(), m, []string{"printenv", "GUIX_DAEMON_SOCKET"}, nil); err == nil {
		t.Error("GUIX_DAEMON_SOCKET set for the default socket")
	}
}

func TestWrongHostKeyRefused(t *testing.T) {
	for _, keyType := range []string{"ed25519", "rsa"} {
		t.Run(keyType, func(t *testing.T) {
			s, r := setup(t)
			dir := t.TempDir()
			if out, err := exec.Command("ssh-keygen", "-q", "-t", keyType, "-N", "", "-f", filepath.Join(dir, "other")).CombinedOutput(); err != nil {
				t.Fatalf("ssh-keygen: %v: %s", err, out)
			}
			other, _ := os.ReadFile(filepath.Join(dir, "other.pub"))
			m := s.Target()
			m.HostKey = strings.TrimSpace(string(other))
			marker := filepath.Join(dir, "ran")
			err := r.RunRemote(context.Background(), m, []string{"touch", marker}, sshexec.Stdio{})
			var ue *sshexec.UnreachableError
			if !errors.As(err, &ue) || !ue.HostKeyMismatch {
				t.Fatalf("err = %v, want a host key mismatch", err)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Fatal("the remote command ran on a host with the wrong key")
			}
			if ue.PinnedType != "ssh-"+keyType || ue.OfferedType != "ED25519" {
				t.Errorf("pinned %q offered %q", ue.PinnedType, ue.OfferedType)
			}
			msg := err.Error()
			for _, want := range []string{"ssh-" + keyType, "ED25519", fmt.Sprintf("`ssh-keyscan -p %d 127.0.0.1`", s.Port)} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q lacks %q", msg, want)
				}
			}
			// The caller names the machine; the fix is said once.
			if strings.Contains(msg, "machine '") || strings.Count(msg, "ssh-keyscan") != 1 {
				t.Errorf("message %q names the machine or says the fix twice", msg)
			}
			// The right key still works afterwards: the pin is replaced, not appended.
			if err := r.RunRemote(context.Background(), s.Target(), []string{"true"}, sshexec.Stdio{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestMissingPrivateKeySpawnsNothing(t *testing.T) {
	s, r := setup(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "spawned")
	fake := filepath.Join(dir, "ssh")
	os.WriteFile(fake, []byte("#!/bin/sh\ntouch "+marker+"\n"), 0o755)
	r.SSH = fake
	m := s.Target()
	m.PrivateKey = filepath.Join(dir, "no-such-key")
	err := r.RunRemote(context.Background(), m, []string{"true"}, sshexec.Stdio{})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), m.PrivateKey) || !strings.Contains(err.Error(), "private-key") {
		t.Fatalf("err = %v, want a missing private key error naming the file", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("ssh was started")
	}
	// The same fake ssh is started when the key exists, so the check above means something.
	m.PrivateKey = s.ClientKey
	r.RunRemote(context.Background(), m, []string{"true"}, sshexec.Stdio{})
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("fake ssh not started with a present key")
	}
}

func TestExitStatuses(t *testing.T) {
	s, r := setup(t)
	err := r.RunRemote(context.Background(), s.Target(), []string{"sh", "-c", "echo oops >&2; exit 3"}, sshexec.Stdio{})
	var re *sshexec.RemoteError
	if !errors.As(err, &re) || re.Code != 3 || !strings.Contains(re.StderrTail, "oops") {
		t.Fatalf("err = %v (%#v), want RemoteError code 3", err, err)
	}
	s.Stop()
	err = r.RunRemote(context.Background(), s.Target(), []string{"true"}, sshexec.Stdio{})
	var ue *sshexec.UnreachableError
	if !errors.As(err, &ue) || ue.HostKeyMismatch {
		t.Fatalf("err = %v, want UnreachableError", err)
	}
	// The caller names the machine; this layer says only what went wrong.
	if !strings.HasPrefix(err.Error(), "ssh cannot connect or log in: ") || !strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "machine '") {
		t.Errorf("message %q", err)
	}
	// The machine comes back: a new connection is made.
	s.Restart(t)
	if err := r.RunRemote(context.Background(), s.Target(), []string{"true"}, sshexec.Stdio{}); err != nil {
		t.Fatal(err)
	}
}

func TestConnectionSharing(t *testing.T) {
	s, r := setup(t)
	output(t, r, s.Target(), "true")
	dir, _ := r.ControlDir()
	socks := sockets(dir)
	if len(socks) != 1 {
		t.Fatalf("control directory holds %q, want one socket", socks)
	}
	if st, err := os.Stat(socks[0]); err != nil || st.Mode().Type() != fs.ModeSocket {
		t.Fatalf("%s: %v %v", socks[0], st, err)
	}
	before := strings.Count(s.Log(), "Connection from")
	for i := 0; i < 3; i++ {
		output(t, r, s.Target(), "true")
	}
	if after := strings.Count(s.Log(), "Connection from"); after != before {
		t.Errorf("sshd accepted %d new connections for commands that should share one", after-before)
	}
	// With sharing off, every command connects anew: the count above can move.
	off := &sshexec.Runner{StateDir: r.StateDir, ControlPersist: -1}
	output(t, off, s.Target(), "true")
	if after := strings.Count(s.Log(), "Connection from"); after != before+1 {
		t.Errorf("unshared command made %d connections, want 1", after-before)
	}
}

func TestStaleMasterReplaced(t *testing.T) {
	s, r := setup(t)
	output(t, r, s.Target(), "true")
	pid, err := r.MasterPID(context.Background(), s.Target())
	if err != nil || pid == 0 {
		t.Fatalf("master pid %d, %v", pid, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	dir, _ := r.ControlDir()
	if socks := sockets(dir); len(socks) != 1 {
		t.Fatalf("killed master left %q, want its socket", socks)
	}
	if got := output(t, r, s.Target(), "echo", "again"); got != "again\n" {
		t.Fatalf("got %q", got)
	}
	pid2, err := r.MasterPID(context.Background(), s.Target())
	if err != nil || pid2 == 0 || pid2 == pid {
		t.Fatalf("new master pid %d (old %d), %v", pid2, pid, err)
	}
}

// TestCancelLeavesNoProcess: cancelling a running remote command kills the local ssh
// and waits for it, with and without a shared connection.
func TestCancelLeavesNoProcess(t *testing.T) {
	for _, persist := range []time.Duration{0, -1} {
		t.Run("persist="+persist.String(), func(t *testing.T) {
			s, r := setup(t)
			r.ControlPersist = persist
			ctx, cancel := context.WithCancel(context.Background())
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() {
				done <- r.RunRemote(ctx, s.Target(), []string{"sh", "-c", "echo started; exec sleep 20"}, sshexec.Stdio{Stdout: pw})
				pw.Close()
			}()
			buf := make([]byte, 8)
			if _, err := io.ReadFull(pr, buf); err != nil {
				t.Fatalf("remote did not start: %v", err)
			}
			children := sshChildren()
			if len(children) == 0 {
				t.Fatal("no ssh child while the command runs")
			}
			cancel()
			go io.Copy(io.Discard, pr)
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("err = %v, want context.Canceled", err)
			}
			for _, pid := range children {
				if _, err := os.Stat(filepath.Join("/proc", itoa(pid))); err == nil {
					t.Errorf("ssh %d still exists (not reaped) after RunRemote returned", pid)
				}
			}
			if left := sshChildren(); len(left) > 0 {
				t.Errorf("ssh children left: %v", left)
			}
		})
	}
}

// sshChildren lists our child processes (the ssh clients; a daemonized master is not
// our child).
func sshChildren() []int {
	var out []int
	for _, pid := range sshtest.Descendants(os.Getpid()) {
		comm, _ := os.ReadFile(filepath.Join("/proc", itoa(pid), "comm"))
		if strings.TrimSpace(string(comm)) == "ssh" {
			out = append(out, pid)
		}
	}
	return out
}

func itoa(i int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(i)) }

func fmtInt(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}

// TestStreamMemory sends 256 MiB through a remote cat and back: every byte arrives and
// the Go heap does not grow with the stream.
func TestStreamMemory(t *testing.T) {
	s, r := setup(t)
	const size = 256 << 20
	var counted countWriter
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := r.RunRemote(context.Background(), s.Target(), []string{"cat"},
		sshexec.Stdio{Stdin: io.LimitReader(zeros{}, size), Stdout: &counted})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if counted.n != size {
		t.Fatalf("got %d bytes back, sent %d", counted.n, size)
	}
	// TotalAlloc counts every byte ever allocated: buffering the stream would add at
	// least its size.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
		t.Errorf("streaming 256 MiB allocated %d MiB", grew>>20)
	}
	if after.HeapInuse > 64<<20 {
		t.Errorf("heap in use %d MiB", after.HeapInuse>>20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func TestRemoteTraceIsPasteable(t *testing.T) {
	s, r := setup(t)
	var trace bytes.Buffer
	r.Trace = &trace
	args := []string{"printf", `%s\0`, "a b", "it's", "$HOME", "x\ny", ""}
	want := output(t, r, s.Target(), args...)
	// The last traced command is the one that ran args (the first may start the
	// shared connection).
	lines := strings.Split(trace.String(), "\n+ ")
	line, ok := strings.CutPrefix(lines[len(lines)-1], "+ ")
	if len(lines) > 1 {
		line, ok = lines[len(lines)-1], true
	}
	if !ok || !strings.Contains(line, "printf") {
		t.Fatalf("trace %q", trace.String())
	}
	got, err := exec.Command("/bin/sh", "-c", line).Output()
	if err != nil {
		t.Fatalf("pasted %q: %v", line, err)
	}
	if string(got) != want {
		t.Errorf("pasted trace printed %q, RunRemote got %q", got, want)
	}
}

func TestNoHostKeyRefusedBeforeSpawning(t *testing.T) {
	s, r := setup(t)
	m := s.Target()
	m.HostKey = ""
	err := r.RunRemote(context.Background(), m, []string{"true"}, sshexec.Stdio{})
	var nh *sshexec.NoHostKeyError
	if !errors.As(err, &nh) || !strings.Contains(err.Error(), "ssh-keyscan -p "+itoa(s.Port)+" 127.0.0.1") {
		t.Fatalf("err = %v", err)
	}
}

func writeFile(name, data string) error { return os.WriteFile(name, []byte(data), 0o600) }

// sockets lists the control sockets in dir (not the lock files beside them).
func sockets(dir string) []string {
	var out []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Type() == fs.ModeSocket {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}
