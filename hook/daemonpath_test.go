package hook

import (
	"offload/machines"
	"offload/placement"
	"slices"
	"testing"
	"time"
)

func TestTopoOrderPutsReferencesFirst(t *testing.T) {
	refs := map[string][]string{
		"/s/c": {"/s/b", "/s/c", "/s/elsewhere"},
		"/s/b": {"/s/a"},
		"/s/a": nil,
		"/s/d": {"/s/c", "/s/a"},
	}
	got := topoOrder([]string{"/s/d", "/s/c", "/s/b", "/s/a"}, func(p string) []string { return refs[p] })
	pos := map[string]int{}
	for i, p := range got {
		pos[p] = i
	}
	if len(got) != 4 {
		t.Fatalf("got %v, want the four paths once each", got)
	}
	for p, rs := range refs {
		for _, r := range rs {
			if _, in := pos[r]; in && r != p && pos[r] > pos[p] {
				t.Errorf("%s comes after %s, which refers to it: %v", r, p, got)
			}
		}
	}
}

func TestTopoOrderSurvivesCycles(t *testing.T) {
	refs := map[string][]string{"/s/a": {"/s/b"}, "/s/b": {"/s/a"}}
	got := topoOrder([]string{"/s/a", "/s/b"}, func(p string) []string { return refs[p] })
	slices.Sort(got)
	if !slices.Equal(got, []string{"/s/a", "/s/b"}) {
		t.Fatalf("got %v", got)
	}
}

func TestLocalDaemonSocket(t *testing.T) {
	for _, c := range []struct{ env, state, want string }{
		{"", "/var/guix", "/var/guix/daemon-socket/socket"},
		{"/run/d.sock", "/var/guix", "/run/d.sock"},
		{"file:///run/d.sock", "/var/guix", "/run/d.sock"},
		{"guix://build.example:44146", "/var/guix", ""},
	} {
		if got := localDaemonSocket(c.env, c.state); got != c.want {
			t.Errorf("localDaemonSocket(%q, %q) = %q, want %q", c.env, c.state, got, c.want)
		}
	}
}

func TestParsePath(t *testing.T) {
	for in, want := range map[string]string{"daemon": "daemon", "shell": "shell", "": "", "auto": "", "fast": ""} {
		if got := parsePath(in); got != want {
			t.Errorf("parsePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBulkThresholdFollowsTheRoundTrip(t *testing.T) {
	h := &Hook{}
	h.rtt = 350 * time.Microsecond // loopback through an ssh forward
	near := h.bulkThreshold()
	h.rtt = 20 * time.Millisecond // a WAN
	far := h.bulkThreshold()
	if !(far < near) {
		t.Fatalf("threshold at 20 ms (%d) not below the one at 0.35 ms (%d)", far, near)
	}
	if near < 10<<20 || near > 100<<20 {
		t.Errorf("threshold at 0.35 ms = %d bytes, want tens of MiB", near)
	}
	h.Conf.BulkThreshold = 1234
	if got := h.bulkThreshold(); got != 1234 {
		t.Errorf("configured threshold ignored: %d", got)
	}
}

// TestBigSourceByAdd: a big source item goes by AddToStore first only to a near machine,
// the bulk bundle is then tried once, and afterwards the faster of the two (per byte,
// from what placement learned) is taken.
func TestBigSourceByAdd(t *testing.T) {
	m := &machines.Machine{Name: "m", Port: 22}
	for _, c := range []struct {
		name     string
		rtt      time.Duration
		add, imp time.Duration // seconds for 100 MiB each; 0 never measured
		want     bool
	}{
		{"near, nothing learned", 300 * time.Microsecond, 0, 0, true},
		{"far, nothing learned", 20 * time.Millisecond, 0, 0, false},
		{"far, only the bundle learned", 20 * time.Millisecond, 0, 5 * time.Second, false},
		{"near, only the bundle learned", 300 * time.Microsecond, 0, 5 * time.Second, true},
		{"AddToStore learned, the bundle not yet", 300 * time.Microsecond, 4 * time.Second, 0, false},
		{"AddToStore faster", 20 * time.Millisecond, 4 * time.Second, 5 * time.Second, true},
		{"the bundle faster", 300 * time.Microsecond, 6 * time.Second, 5 * time.Second, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &Hook{Conf: Config{StateDir: t.TempDir()}}
			h.rtt = c.rtt
			var streams []placement.Stream
			if c.add > 0 {
				streams = append(streams, placement.Stream{Method: placement.StreamAdd, Bytes: 100 << 20, Send: c.add})
			}
			if c.imp > 0 {
				streams = append(streams, placement.Stream{Method: placement.StreamImport, Bytes: 100 << 20, Send: c.imp})
			}
			if err := (placement.Store{Dir: h.Conf.StateDir}).Record(m.ID(), placement.Offload{Streams: streams}); err != nil {
				t.Fatal(err)
			}
			if got := h.bigSourceByAdd(m); got != c.want {
				t.Errorf("bigSourceByAdd = %v, want %v", got, c.want)
			}
		})
	}
}
