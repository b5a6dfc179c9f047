package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"offload/integration/farm"
)

// TestRemoteRootsRemoved: the build's GC roots on the machine are removed at the end,
// and so are those that earlier hooks of this host, since dead, left behind.
func TestRemoteRootsRemoved(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	// The machine's user is root (the test sshd's user), whose home holds the roots.
	dir := filepath.Join("/root", ".cache/guix/offload")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	tag := strings.ReplaceAll(t.Name(), "/", "_") + fmt.Sprint(os.Getpid())
	stale := filepath.Join(dir, fmt.Sprintf("%s-%d-%s-stale.drv", host, dead.Process.Pid, tag))
	live := filepath.Join(dir, fmt.Sprintf("%s-%d-%s-live.drv", host, os.Getpid(), tag))
	for _, p := range []string{stale, live} {
		if err := os.Symlink("/nonexistent", p); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(p) })
	}
	d := okDrv(f, "roots")
	r := offload(t, f, d, buildOpts{shell: true})
	if r.status != 0 {
		t.Fatalf("status %d %q", r.status, r.messages)
	}
	if _, err := os.Lstat(stale); err == nil {
		t.Error("a dead hook's root was not removed")
	}
	if _, err := os.Lstat(live); err != nil {
		t.Error("a live hook's root was removed")
	}
	base := strings.TrimSuffix(filepath.Base(d.Path), ".drv")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), base) {
			t.Errorf("the build's own root %s is left", e.Name())
		}
	}
}
