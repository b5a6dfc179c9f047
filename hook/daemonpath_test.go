package hook

import (
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
