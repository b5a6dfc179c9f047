package machines

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func TestStateMissingIsHealthy(t *testing.T) {
	s := State{Dir: filepath.Join(t.TempDir(), "not", "yet")}
	h, err := s.Health("m:22")
	if err != nil {
		t.Fatal(err)
	}
	if h.Down(t0) || h.Failures != 0 || h.Probe != nil {
		t.Errorf("health of an unknown machine = %+v", h)
	}
}

func TestBackoffGrowsAndExpires(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "offload")
	s := State{Dir: dir}
	id := "dead.example.org:22"
	now := t0
	wants := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 320 * time.Second, 600 * time.Second, 600 * time.Second}
	for i, want := range wants {
		if err := s.RecordFailure(id, errors.New("connection refused"), now); err != nil {
			t.Fatal(err)
		}
		h, err := s.Health(id)
		if err != nil {
			t.Fatal(err)
		}
		if h.Failures != i+1 || !h.DownSince.Equal(t0) || h.LastError != "connection refused" {
			t.Errorf("after %d failures: %+v", i+1, h)
		}
		if got := h.RetryAfter.Sub(now); got != want {
			t.Errorf("backoff after %d failures = %v, want %v", i+1, got, want)
		}
		if !h.Down(now) || !h.Down(now.Add(want-time.Nanosecond)) {
			t.Errorf("not down during its backoff after %d failures", i+1)
		}
		if h.Down(now.Add(want)) {
			t.Errorf("still down when the backoff of %v expired", want)
		}
		now = now.Add(want) // retried when the backoff ended, and failed again
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory mode = %v, want 0700", fi.Mode().Perm())
	}
}

func TestSuccessClearsBackoffAndCachesProbe(t *testing.T) {
	s := State{Dir: t.TempDir()}
	id := "m:22"
	if err := s.RecordSuccess(id, &Probe{Load1: 0.5, Cores: 4, FreeBytes: 5 << 30, Time: t0}, t0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := s.RecordFailure(id, errors.New("timeout"), t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	h, _ := s.Health(id)
	if h.Probe != nil {
		t.Errorf("a failed machine keeps its old probe: %+v", h.Probe)
	}
	later := t0.Add(2 * time.Minute)
	if err := s.RecordSuccess(id, &Probe{Load1: 1.5, Cores: 8, FreeBytes: 7 << 30}, later); err != nil {
		t.Fatal(err)
	}
	h, err := s.Health(id)
	if err != nil {
		t.Fatal(err)
	}
	if h.Down(later) || h.Failures != 0 || !h.DownSince.IsZero() || !h.RetryAfter.IsZero() || h.LastError != "" {
		t.Errorf("after success: %+v", h)
	}
	want := Probe{Load1: 1.5, Cores: 8, FreeBytes: 7 << 30, Time: later}
	if h.Probe == nil || !h.Probe.Time.Equal(want.Time) || h.Probe.Load1 != want.Load1 || h.Probe.Cores != 8 || h.Probe.FreeBytes != want.FreeBytes {
		t.Errorf("cached probe = %+v, want %+v", h.Probe, want)
	}
	if p := h.FreshProbe(later.Add(5*time.Second), 5*time.Second); p == nil {
		t.Error("probe 5s old is not fresh with maxAge 5s")
	}
	if p := h.FreshProbe(later.Add(6*time.Second), 5*time.Second); p != nil {
		t.Error("probe 6s old is fresh with maxAge 5s")
	}
	// A success without a probe (a build connection) keeps the probe.
	if err := s.RecordSuccess(id, nil, later.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.Health(id); h.Probe == nil {
		t.Error("RecordSuccess(nil) dropped the cached probe")
	}
}

func TestNotice(t *testing.T) {
	s := State{Dir: t.TempDir()}
	id := "m:22"
	steps := []struct {
		after time.Duration
		want  bool
	}{{0, true}, {5 * time.Second, false}, {59 * time.Second, false}, {60 * time.Second, true}, {65 * time.Second, false}}
	for _, st := range steps {
		got, err := s.Notice(id, t0.Add(st.after), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if got != st.want {
			t.Errorf("Notice at +%v = %v, want %v", st.after, got, st.want)
		}
	}
}

func TestStateDamagedFile(t *testing.T) {
	s := State{Dir: t.TempDir()}
	id := "m:22"
	if err := os.WriteFile(filepath.Join(s.Dir, "m:22.state"), []byte(`{"failures": 3, "retry`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Health(id); err == nil {
		t.Error("no error for a damaged state file")
	}
	if err := s.RecordFailure(id, errors.New("x"), t0); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Health(id); err != nil || h.Failures != 1 {
		t.Errorf("after rewriting a damaged file: %+v, %v", h, err)
	}
}

func TestStateIDCannotEscapeDir(t *testing.T) {
	root := t.TempDir()
	s := State{Dir: filepath.Join(root, "offload")}
	if err := s.RecordFailure("../../evil:22", errors.New("x"), t0); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(root)
	if len(entries) != 1 || entries[0].Name() != "offload" {
		t.Errorf("state written outside its directory: %v", entries)
	}
	if h, err := s.Health("../../evil:22"); err != nil || h.Failures != 1 {
		t.Errorf("health = %+v, %v", h, err)
	}
}

// TestStateConcurrentWriters runs many writers and readers at once on one
// machine's file: no reader may see a torn file and no failure may be lost.
func TestStateConcurrentWriters(t *testing.T) {
	s := State{Dir: filepath.Join(t.TempDir(), "offload")}
	const writers, rounds = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds*2)
	for w := 0; w < writers; w++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if err := s.RecordFailure("m:22", fmt.Errorf("failure %d", r), t0); err != nil {
					errs <- err
				}
			}
		}()
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				if _, err := s.Health("m:22"); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	h, err := s.Health("m:22")
	if err != nil {
		t.Fatal(err)
	}
	if h.Failures != writers*rounds {
		t.Errorf("failures = %d, want %d (updates lost)", h.Failures, writers*rounds)
	}
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		if e.Name() != "m:22.state" && e.Name() != "m:22.state.lock" {
			t.Errorf("left over file %s", e.Name())
		}
	}
}

// TestNoticeNotDueWritesNothing: with many machines in backoff, every postponed
// request asks Notice for each; when no notice is due the state file is not rewritten.
func TestNoticeNotDueWritesNothing(t *testing.T) {
	s := State{Dir: t.TempDir()}
	id := "m:22"
	if _, err := s.Notice(id, t0, time.Minute); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(s.file(id))
	if err != nil {
		t.Fatal(err)
	}
	if tell, err := s.Notice(id, t0.Add(time.Second), time.Minute); err != nil || tell {
		t.Fatalf("Notice = %v, %v", tell, err)
	}
	after, err := os.Stat(s.file(id))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("the state file was rewritten although no notice was due")
	}
}
