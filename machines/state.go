package machines

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"offload/locking"
	"offload/statedir"
)

// Backoff bounds: after the n-th failure in a row a machine is left alone
// for BackoffBase * 2^(n-1), at most BackoffMax.
const (
	BackoffBase = 5 * time.Second
	BackoffMax  = 10 * time.Minute
)

// State keeps one small file per machine under Dir (the caller passes
// $GUIX_STATE_DIRECTORY/offload), named by Machine.StateKey: its connection
// failures and its last load probe. Many hook processes share these files: writers take a lock
// and replace the file by rename, so readers never see a torn file and no
// update is lost.
type State struct{ Dir string }

// Health is what the state file remembers about one machine.
type Health struct {
	DownSince  time.Time `json:"down_since,omitzero"`  // first failure of the current run; zero when up
	Failures   int       `json:"failures,omitempty"`   // failures in a row
	RetryAfter time.Time `json:"retry_after,omitzero"` // end of the backoff
	LastError  string    `json:"last_error,omitempty"`
	Probe      *Probe    `json:"probe,omitempty"`  // last successful probe
	Noticed    time.Time `json:"noticed,omitzero"` // last time the hook told the user it is down
}

// Down reports whether the machine failed and its backoff has not expired.
func (h Health) Down(now time.Time) bool {
	return h.Failures > 0 && now.Before(h.RetryAfter)
}

// FreshProbe returns the cached probe if it is at most maxAge old, else nil.
func (h Health) FreshProbe(now time.Time, maxAge time.Duration) *Probe {
	if h.Probe == nil {
		return nil
	}
	age := now.Sub(h.Probe.Time)
	if age > maxAge || age < -maxAge {
		return nil
	}
	p := *h.Probe
	return &p
}

// Backoff returns how long a machine is left alone after its n-th failure
// in a row.
func Backoff(failures int) time.Duration {
	if failures < 1 {
		return 0
	}
	d := BackoffBase
	for i := 1; i < failures; i++ {
		d *= 2
		if d >= BackoffMax {
			return BackoffMax
		}
	}
	return d
}

// file returns the state file of machine id; the id is escaped so that
// no name can point outside Dir.
func (s State) file(id string) string {
	return statedir.Layout{Dir: s.Dir}.MachineState(id)
}

// Health returns what is known about machine id; a missing file means a
// healthy machine never probed.
func (s State) Health(id string) (Health, error) {
	var h Health
	path := s.file(id)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return h, nil
	}
	if err != nil {
		return h, fmt.Errorf("read machine state: %w", err)
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return Health{}, fmt.Errorf("read machine state %s: %w", path, err)
	}
	return h, nil
}

// RecordFailure notes that connecting to or probing machine id failed at
// now, and doubles its backoff.
func (s State) RecordFailure(id string, failure error, now time.Time) error {
	return s.update(id, func(h *Health) {
		if h.Failures == 0 {
			h.DownSince = now
		}
		h.Failures++
		h.RetryAfter = now.Add(Backoff(h.Failures))
		h.LastError = ""
		if failure != nil {
			h.LastError = failure.Error()
		}
		h.Probe = nil // the machine's old load says nothing now
	})
}

// RecordSuccess notes that machine id answered at now: it clears the
// backoff and, when p is not nil, caches p (stamped now when p.Time is
// zero).
func (s State) RecordSuccess(id string, p *Probe, now time.Time) error {
	return s.update(id, func(h *Health) {
		h.DownSince, h.Failures, h.RetryAfter, h.LastError = time.Time{}, 0, time.Time{}, ""
		h.Noticed = time.Time{}
		if p != nil {
			c := *p
			if c.Time.IsZero() {
				c.Time = now
			}
			h.Probe = &c
		}
	})
}

// Notice reports whether the user should be told again that machine id is
// down: true, and now recorded, when the last notice is older than every.
// The daemon asks the hook again every few seconds; this keeps it from
// repeating the same line each time.
func (s State) Notice(id string, now time.Time, every time.Duration) (bool, error) {
	due := func(h Health) bool { return h.NoticeDue(now, every) }
	// The common case, a notice given recently, reads the file and writes nothing:
	// with many machines in backoff, a postponed request must stay cheap.
	if h, err := s.Health(id); err == nil && !due(h) {
		return false, nil
	}
	tell := false
	err := s.update(id, func(h *Health) {
		if due(*h) {
			h.Noticed = now
			tell = true
		}
	})
	return tell, err
}

// NoticeDue tells whether a notice about this machine is due: none given yet, or the
// last one older than every. Callers holding a Health just read can skip Notice (and
// its second read of the file) when it is not.
func (h Health) NoticeDue(now time.Time, every time.Duration) bool {
	return h.Noticed.IsZero() || now.Sub(h.Noticed) >= every || now.Before(h.Noticed)
}

// update changes the state of machine id under its lock and replaces the
// file atomically. A damaged file is replaced: the state is only a cache.
func (s State) update(id string, change func(*Health)) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	path := s.file(id)
	lock, err := locking.Acquire(context.Background(), path+".lock", "updating the machine's state")
	if err != nil {
		return fmt.Errorf("lock machine state %s: %w", path, err)
	}
	defer lock.Release()

	h, err := s.Health(id)
	if err != nil {
		h = Health{}
	}
	change(&h)
	b, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("write machine state %s: %w", path, err)
	}
	if err := statedir.WriteAtomic(path, append(b, '\n')); err != nil {
		return fmt.Errorf("machine state: %w", err)
	}
	return nil
}
