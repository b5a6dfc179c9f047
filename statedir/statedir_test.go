package statedir

import (
	"path/filepath"
	"strings"
	"testing"
)

// Every path stays inside the directory whatever the machine is called, and plain
// names keep the names Guix's own hook uses.
func TestLayout(t *testing.T) {
	l := Layout{Dir: "/var/guix/offload"}
	if got := l.Slots("build1.example.org:22"); got != "/var/guix/offload/build1.example.org:22" {
		t.Errorf("slots: %s", got)
	}
	if got := l.TransferLock("build1:22", "upload"); got != "/var/guix/offload/build1:22.upload.lock" {
		t.Errorf("transfer lock: %s", got)
	}
	for _, name := range []string{"../../etc:22", "a/b:1", "..", ".", "", "x%2F:3", "[::1]:22"} {
		for _, p := range []string{l.Slots(name), l.Queue(name), l.TransferLock(name, "upload"), l.MachineState(name)} {
			if filepath.Dir(p) != l.Dir || filepath.Clean(p) != p {
				t.Errorf("%q: %s is not a file of %s", name, p, l.Dir)
			}
		}
		if p := l.KnownHosts(name); filepath.Dir(p) != filepath.Join(l.Dir, "known_hosts.d") || filepath.Clean(p) != p {
			t.Errorf("%q: %s is not a file of known_hosts.d", name, p)
		}
	}
	if Escape("a:1") == Escape("a%3A1") {
		t.Errorf("two names escape alike")
	}
	if d := (Layout{Dir: strings.Repeat("/x", 40)}).ControlDir(); len(d) > maxControlDir || !strings.HasPrefix(d, "/tmp/offload-ssh-") {
		t.Errorf("long state dir: control dir %s", d)
	}
}
