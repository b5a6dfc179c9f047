package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const vectors = "../../testdata/vectors/hook"

// TestHelperHook is not a test: it is the scripted fake hook, run as a
// child process by the tests below (the os.Args[0] helper pattern). It
// answers with the replies in DAEMON_HELPER_ANSWERS, records every byte it
// reads on fd 0 into DAEMON_HELPER_RECORD, and checks the fds it was given.
func TestHelperHook(t *testing.T) {
	if os.Getenv("DAEMON_HELPER") != "1" {
		t.Skip("helper process")
	}
	os.Exit(helperHook())
}

func helperHook() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "helper error: "+format+"\n", args...)
		return 3
	}
	var st1, st2, st3, st4 syscall.Stat_t
	if err := syscall.Fstat(1, &st1); err != nil {
		return fail("fstat 1: %v", err)
	}
	syscall.Fstat(2, &st2)
	if st1.Dev != st2.Dev || st1.Ino != st2.Ino || st1.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		return fail("fds 1 and 2 are not the same pipe")
	}
	if err := syscall.Fstat(4, &st4); err != nil || st4.Mode&syscall.S_IFMT != syscall.S_IFIFO || st4.Ino == st1.Ino {
		return fail("fd 4 is not a separate pipe: %v", err)
	}
	if err := syscall.Fstat(3, &st3); err != nil || st3.Mode&syscall.S_IFMT != syscall.S_IFCHR {
		return fail("fd 3 is not /dev/null: %v", err)
	}
	if wd, _ := os.Getwd(); wd != "/" {
		return fail("cwd is %s", wd)
	}
	if sid, _, _ := syscall.RawSyscall(syscall.SYS_GETSID, 0, 0, 0); int(sid) != os.Getpid() {
		return fail("not a session leader")
	}
	rec, err := os.OpenFile(os.Getenv("DAEMON_HELPER_RECORD"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fail("%v", err)
	}
	log := os.NewFile(4, "log")
	in := bufio.NewReader(io.TeeReader(os.Stdin, rec))
	answers := strings.Split(os.Getenv("DAEMON_HELPER_ANSWERS"), ",")
	for i, a := range answers {
		if a == "exit" {
			return 0
		}
		if _, err := in.ReadString('\n'); err != nil {
			return 0 // EOF: the daemon has nothing more to ask
		}
		fmt.Fprintf(os.Stderr, "helper: request %d\n", i)
		fmt.Fprintf(log, "log %d\n", i)
		if a == "sleep" {
			fmt.Println("# postpone")
			time.Sleep(time.Hour)
		}
		fmt.Printf("# %s\n", a)
		if a == "accept" {
			in.ReadString('\n')
			in.ReadString('\n')
			if _, err := in.ReadByte(); err != io.EOF {
				return fail("fd 0 not closed after the two lines")
			}
			fmt.Fprintln(os.Stderr, "helper: done")
			return 7
		}
	}
	io.Copy(io.Discard, in)
	return 0
}

func startHelper(t *testing.T, answers string) (*Hook, string) {
	t.Helper()
	rec := filepath.Join(t.TempDir(), "stdin.rec")
	argv := []string{os.Args[0], "-test.run=^TestHelperHook$", "--", "offload", "x86_64-linux", "0", "1", "0"}
	env := []string{"DAEMON_HELPER=1", "DAEMON_HELPER_ANSWERS=" + answers, "DAEMON_HELPER_RECORD=" + rec}
	h, err := Start(context.Background(), argv, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Kill)
	return h, rec
}

var answerRE = regexp.MustCompile(`stdout hook->daemon b'# (\w+)\\n'`)

// Replaying a recorded exchange through the driver writes exactly the bytes
// that the real guix-daemon wrote (stdin.raw).
func TestReplayVectors(t *testing.T) {
	for _, name := range []string{"ok-final", "decline-arm", "decline-features", "postpone-then-accept", "dependent-c2", "twoout-c1"} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(vectors, name, "stdin.raw"))
			if err != nil {
				t.Fatal(err)
			}
			transcript, err := os.ReadFile(filepath.Join(vectors, name, "transcript.txt"))
			if err != nil {
				t.Fatal(err)
			}
			var answers []string
			for _, m := range answerRE.FindAllStringSubmatch(string(transcript), -1) {
				answers = append(answers, m[1])
			}
			if len(answers) == 0 {
				t.Fatal("no answers in transcript")
			}
			h, rec := startHelper(t, strings.Join(answers, ","))
			lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
			accepted := false
			for i, want := range answers {
				f := strings.Split(lines[i], " ")
				if len(f) != 4 {
					t.Fatalf("request line %q", lines[i])
				}
				var features []string
				if f[3] != "" {
					features = strings.Split(f[3], ",")
				}
				got, err := h.Request(f[0] == "1", f[1], f[2], features)
				if err != nil || got != want {
					t.Fatalf("request %d: %q %v, want %q", i, got, err, want)
				}
				if got == "accept" {
					accepted = true
					inputs := shuffled(strings.Fields(lines[i+1]))
					outputs := shuffled(strings.Fields(lines[i+2]))
					if err := h.SendPaths(inputs, outputs); err != nil {
						t.Fatal(err)
					}
				}
			}
			if !accepted {
				h.CloseStdin()
			}
			status, signaled, err := h.Wait()
			wantStatus := 0
			if accepted {
				wantStatus = 7
			}
			if err != nil || signaled || status != wantStatus {
				t.Fatalf("wait: %d %v %v; messages %q", status, signaled, err, h.Messages())
			}
			got, _ := os.ReadFile(rec)
			if !bytes.Equal(got, raw) {
				t.Errorf("daemon side wrote\n%q\nwant (stdin.raw)\n%q", got, raw)
			}
			msgs := strings.Join(h.Messages(), "\n")
			if !strings.Contains(msgs, "helper: request 0") || strings.Contains(msgs, "# ") {
				t.Errorf("messages %q", msgs)
			}
			if accepted && !strings.Contains(msgs, "helper: done") {
				t.Errorf("messages after accept not collected: %q", msgs)
			}
			if !bytes.Contains(h.Log(), []byte("log 0\n")) {
				t.Errorf("fd 4 log %q", h.Log())
			}
		})
	}
}

func shuffled(s []string) []string {
	out := append([]string(nil), s...)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func TestBadReplyAndEOF(t *testing.T) {
	h, _ := startHelper(t, "bogus")
	_, err := h.Request(false, "x86_64-linux", "/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv", nil)
	var bad *BadReplyError
	if !errors.As(err, &bad) || bad.Reply != "bogus" {
		t.Errorf("bad reply: %v", err)
	}
	h2, _ := startHelper(t, "exit")
	if _, err := h2.Request(false, "x86_64-linux", "/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv", nil); !errors.Is(err, ErrEOF) {
		t.Errorf("EOF: %v", err)
	}
}

func TestKillGroup(t *testing.T) {
	h, _ := startHelper(t, "sleep")
	if _, err := h.Request(false, "x86_64-linux", "/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv", nil); err != nil {
		t.Fatal(err)
	}
	h.Kill()
	if _, signaled, err := h.Wait(); !signaled || err != nil {
		t.Errorf("after Kill: signaled=%v err=%v", signaled, err)
	}
}
