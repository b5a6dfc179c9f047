package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDemo runs `make demo`'s program: every step goes as it says, and it leaves no
// sshd server and no temporary directory behind.
func TestDemo(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "demo")
	if out, err := exec.Command("go", "build", "-o", bin, "offload/integration/cmd/demo").CombinedOutput(); err != nil {
		t.Fatalf("build the demo: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"hook answered: # accept", "built remotely", "hook answered: # decline",
		"hook answered: # postpone", "hook exited with status 100", "verdict: accept", "All done"} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	m := regexp.MustCompile(`/\S*offload-demo-[0-9]+`).FindString(text)
	if m == "" {
		t.Fatalf("no farm directory in the output:\n%s", text)
	}
	if _, err := os.Stat(m); err == nil {
		t.Errorf("the demo left %s behind", m)
	}
	if ps, _ := exec.Command("pgrep", "-f", "sshd -f "+m).Output(); len(ps) > 0 {
		t.Errorf("the demo left sshd running: %s", ps)
		exec.Command("pkill", "-f", "sshd -f "+m).Run()
	}
}
