package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"offload/integration/farm"
)

// TestRecordedDeclines replays what real guix-daemon wrote to Guix's own hook in the
// recordings (../testdata/vectors/hook) and expects the same bytes back: a decline for a
// system no machine has, and one for features no machine has.
func TestRecordedDeclines(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 0})
	conf := t.TempDir()
	// The recordings' farm: one x86_64 machine with no features (never contacted:
	// nothing matches).
	machinesFile := `(list (build-machine (name "127.0.0.1") (port 2222) (user "root")
  (systems '("x86_64-linux")) (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO/tx4FKCatkonsxoUjGP5SNaL2WdiVdyumyaNt9iDDe x")))`
	if err := os.WriteFile(filepath.Join(conf, "machines.scm"), []byte(machinesFile), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"decline-arm", "decline-features"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("..", "testdata", "vectors", "hook", name)
			stdin, err := os.ReadFile(filepath.Join(dir, "stdin.raw"))
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join(dir, "stdout.raw"))
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(f.Bin.Offload, "offload", "x86_64-linux", "0", "1", "0")
			cmd.Env = []string{"GUIX_CONFIGURATION_DIRECTORY=" + conf, "GUIX_STATE_DIRECTORY=" + t.TempDir(), "PATH=/usr/bin:/bin"}
			cmd.Stdin = bytes.NewReader(stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v: %s", err, stderr.Bytes())
			}
			if !bytes.Equal(stdout.Bytes(), want) || stderr.Len() != 0 {
				t.Errorf("stdout %q stderr %q, want stdout %q as Guix's hook wrote", stdout.Bytes(), stderr.Bytes(), want)
			}
		})
	}
}
