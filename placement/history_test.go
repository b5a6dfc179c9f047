package placement

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"offload/machines"
	"offload/statedir"
)

// clock is a controlled clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func TestStoreRecordsAndBounds(t *testing.T) {
	c := newClock()
	s := Store{Dir: t.TempDir(), Now: c.now}
	if h, err := s.Load("m:22"); err != nil || h.Throughput() != 0 || len(h.Builds) != 0 {
		t.Fatalf("nothing recorded: %+v %v", h, err)
	}
	// A small upload says nothing of the link; a big one does.
	if err := s.Record("m:22", Offload{Name: "a", Speed: 2, SentBytes: 1000, Send: time.Second, Build: 3 * time.Second, Total: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := s.Record("m:22", Offload{Name: "a", Speed: 2, SentBytes: 100 * mib, Send: 10 * time.Second, Build: 5 * time.Second, Total: 16 * time.Second}); err != nil {
		t.Fatal(err)
	}
	h, err := s.Load("m:22")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Transfers) != 1 || h.Throughput() != 10*mib {
		t.Errorf("transfers %+v: want the big one only, 10 MiB/s", h.Transfers)
	}
	if over, ok := h.Overhead(); !ok || over != time.Second {
		t.Errorf("overhead %v %v, want the median of 1 s and 1 s", over, ok)
	}
	if w := h.Builds["a"].Work; len(w) != 2 || w[0] != 6 || w[1] != 10 {
		t.Errorf("work of a %v: want seconds × speed", w)
	}
	// Samples per name are bounded, the newest kept.
	for i := range MaxSamples + 3 {
		if err := s.Record("m:22", Offload{Name: "a", Speed: 1, Build: time.Duration(i+1) * time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	h, _ = s.Load("m:22")
	if w := h.Builds["a"].Work; len(w) != MaxSamples || w[len(w)-1] != MaxSamples+3 {
		t.Errorf("work of a %v: want the last %d", w, MaxSamples)
	}
}

func TestStoreForgetsLeastRecentNames(t *testing.T) {
	c := newClock()
	var h History
	for i := range MaxNames + 2 {
		h.add(Offload{Name: fmt.Sprintf("n%d", i), Speed: 1, Build: time.Second}, c.now())
		c.advance(time.Second)
		if i == 0 {
			continue
		}
		// n0 is built again each time: recently used, it stays.
		h.add(Offload{Name: "n0", Speed: 1, Build: time.Second}, c.now())
	}
	if len(h.Builds) != MaxNames || h.Builds["n0"] == nil || h.Builds["n1"] != nil || h.Builds["n2"] != nil {
		t.Errorf("%d names; n0 %v n1 %v n2 %v: want the two least recent (n1, n2) gone", len(h.Builds), h.Builds["n0"] != nil, h.Builds["n1"] != nil, h.Builds["n2"] != nil)
	}
}

func TestStoreDamagedFile(t *testing.T) {
	dir := t.TempDir()
	s := Store{Dir: dir}
	path := statedir.Layout{Dir: dir}.Learned("m:22")
	os.MkdirAll(filepath.Dir(path), 0o700)
	os.WriteFile(path, []byte("{not json"), 0o600)
	if _, err := s.Load("m:22"); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("damaged file: %v, want an error naming it", err)
	}
	// Recording starts afresh.
	if err := s.Record("m:22", Offload{Name: "a", Speed: 1, Build: time.Second}); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Load("m:22"); err != nil || len(h.Builds["a"].Work) != 1 {
		t.Errorf("after recording over damage: %+v %v", h, err)
	}
}

func TestCacheKeepsAnswersForTTL(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	asked := 0
	ask := func(ctx context.Context, m *machines.Machine, paths []string) (map[string]bool, error) {
		asked++
		return map[string]bool{paths[0]: true}, nil
	}
	h := Cache{Dir: dir, TTL: 5 * time.Second, Now: c.now}.Wrap(ask)
	m := machine("a", 1)
	paths := []string{"/gnu/store/b-x", "/gnu/store/a-y"}
	for range 3 {
		v, err := h(context.Background(), m, paths)
		if err != nil || !v["/gnu/store/b-x"] || v["/gnu/store/a-y"] {
			t.Fatalf("answer %v %v", v, err)
		}
	}
	if asked != 1 {
		t.Errorf("asked %d times within the TTL, want 1", asked)
	}
	// The same set in another order is the same question; another set is not.
	h(context.Background(), m, []string{"/gnu/store/a-y", "/gnu/store/b-x"})
	h(context.Background(), m, []string{"/gnu/store/c-z"})
	if asked != 2 {
		t.Errorf("asked %d times, want 2", asked)
	}
	// Another machine is another question.
	h(context.Background(), machine("b", 1), paths)
	if asked != 3 {
		t.Errorf("asked %d times, want 3", asked)
	}
	c.advance(6 * time.Second)
	h(context.Background(), m, paths)
	if asked != 4 {
		t.Errorf("asked %d times after the TTL, want 4", asked)
	}
}

func TestCacheDoesNotKeepErrors(t *testing.T) {
	c := newClock()
	asked := 0
	ask := func(ctx context.Context, m *machines.Machine, paths []string) (map[string]bool, error) {
		asked++
		return nil, fmt.Errorf("no answer")
	}
	h := Cache{Dir: t.TempDir(), Now: c.now}.Wrap(ask)
	for range 2 {
		if _, err := h(context.Background(), machine("a", 1), []string{"/gnu/store/a-x"}); err == nil {
			t.Fatal("no error")
		}
	}
	if asked != 2 {
		t.Errorf("asked %d times, want 2 (a failure is not cached)", asked)
	}
}

func TestDrain(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	if _, ok := Drained(dir, "m:22"); ok {
		t.Fatal("drained before drain")
	}
	if err := Drain(dir, "m:22", "disk\nswap", c.now()); err != nil {
		t.Fatal(err)
	}
	mark, ok := Drained(dir, "m:22")
	if !ok || !mark.Since.Equal(c.now()) || mark.Why != "disk swap" {
		t.Errorf("mark %+v %v", mark, ok)
	}
	if s := mark.String(); s != "since 2026-01-02T03:04:05Z (disk swap)" {
		t.Errorf("mark string %q", s)
	}
	if _, ok := Drained(dir, "m:2222"); ok {
		t.Error("another port is drained too")
	}
	if was, err := Undrain(dir, "m:22"); !was || err != nil {
		t.Errorf("undrain: %v %v", was, err)
	}
	if was, err := Undrain(dir, "m:22"); was || err != nil {
		t.Errorf("second undrain: %v %v", was, err)
	}
	if _, ok := Drained(dir, "m:22"); ok {
		t.Error("still drained")
	}
}

// TestStreamsByMethod: big uploads are learned per method, small ones not at all, and
// each method keeps its last MaxSamples.
func TestStreamsByMethod(t *testing.T) {
	s := Store{Dir: t.TempDir(), Now: newClock().now}
	o := Offload{Name: "a", Streams: []Stream{
		{Method: StreamAdd, Bytes: 100 * mib, Send: 4 * time.Second},
		{Method: StreamImport, Bytes: 100 * mib, Send: 5 * time.Second},
		{Method: StreamAdd, Bytes: 1000, Send: time.Second}, // too small to say anything
	}}
	if err := s.Record("m:22", o); err != nil {
		t.Fatal(err)
	}
	h, err := s.Load("m:22")
	if err != nil {
		t.Fatal(err)
	}
	if got := h.StreamRate(StreamAdd); got != 25*mib {
		t.Errorf("add-to-store rate %v, want 25 MiB/s (the small upload left out)", got)
	}
	if got := h.StreamRate(StreamImport); got != 20*mib {
		t.Errorf("import rate %v, want 20 MiB/s", got)
	}
	if got := h.StreamRate("other"); got != 0 {
		t.Errorf("rate of a method never used %v, want 0", got)
	}
	for range MaxSamples + 2 {
		if err := s.Record("m:22", Offload{Streams: []Stream{{Method: StreamAdd, Bytes: 10 * mib, Send: time.Second}}}); err != nil {
			t.Fatal(err)
		}
	}
	h, _ = s.Load("m:22")
	if n := len(h.Streams[StreamAdd]); n != MaxSamples {
		t.Errorf("%d add-to-store samples kept, want %d", n, MaxSamples)
	}
	if got := h.StreamRate(StreamAdd); got != 10*mib {
		t.Errorf("add-to-store rate %v, want the last samples' 10 MiB/s", got)
	}
}
