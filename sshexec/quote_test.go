package sshexec

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
)

// hardArgs are words that break naive quoting.
var hardArgs = []string{
	"plain", "", "with space", "it's", `"double"`, "$HOME", "${x}", "`id`", "$(id)",
	"a;b", "a&&b", "a|b", "a\nb", `back\slash`, `\`, "'", "''", "*", "?", "[a]", "~",
	"~root", "#comment", "a=b", "-n", "--", "\t", "!", "{a,b}", "%s\\0", "tab\there",
	"trailing\\", "<in", ">out", "ünïcode",
}

// shellArgv runs `printf '%s\0' WORDS` through sh -c with WORDS = QuoteCommand(args)
// and returns the words the shell produced.
func shellArgv(t *testing.T, args []string) []string {
	t.Helper()
	script := `printf '%s\0' ` + QuoteCommand(args)
	out, err := exec.Command("/bin/sh", "-c", script).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	return splitNUL(out)
}

func splitNUL(out []byte) []string {
	if len(out) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

func TestQuoteRoundTripThroughShell(t *testing.T) {
	got := shellArgv(t, hardArgs)
	if !equal(got, hardArgs) {
		t.Fatalf("sh split QuoteCommand(args) into\n%q\nwant\n%q", got, hardArgs)
	}
}

func TestQuoteFirstWordIsNotAnAssignment(t *testing.T) {
	// An unquoted "A=b" first word would be a variable assignment, not a command.
	cmd := QuoteCommand([]string{"A=b", "x"})
	out, err := exec.Command("/bin/sh", "-c", cmd+" 2>&1; echo status=$?").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("not found")) {
		t.Fatalf("sh ran %q as something other than a command named A=b: %s", cmd, out)
	}
}

func TestQuoteLeavesSafeWordsAlone(t *testing.T) {
	for _, s := range []string{"guix", "/gnu/store/abc-hello-2.12", "--max-silent-time=3600", "=x", "x86_64-linux", "a,b:c+d@e%f"} {
		if q := Quote(s); q != s {
			t.Errorf("Quote(%q) = %q, want it unchanged", s, q)
		}
	}
	for s, want := range map[string]string{"": "''", "it's": `'it'\''s'`, "a b": "'a b'", "x=1": "'x=1'"} {
		if q := Quote(s); q != want {
			t.Errorf("Quote(%q) = %q, want %q", s, q, want)
		}
	}
}

func FuzzQuote(f *testing.F) {
	for _, a := range hardArgs {
		f.Add(a, "second")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if strings.ContainsRune(a+b, 0) {
			t.Skip("argv words cannot hold NUL")
		}
		args := []string{a, b}
		script := `printf '%s\0' ` + QuoteCommand(args)
		cmd := exec.CommandContext(context.Background(), "/bin/sh", "-c", script)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("sh -c %q: %v", script, err)
		}
		if got := splitNUL(out); !equal(got, args) {
			t.Fatalf("got %q want %q", got, args)
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
