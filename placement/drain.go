package placement

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"offload/statedir"
)

// Drain marks machine id (Machine.ID) so that no new build goes to it; builds already
// there finish. The mark holds the time and, when given, why.
func Drain(stateDir, id, why string, now time.Time) error {
	path := statedir.Layout{Dir: stateDir}.Drained(id)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	line := now.UTC().Format(time.RFC3339)
	if why = strings.Join(strings.Fields(why), " "); why != "" {
		line += " " + why
	}
	tmp, err := os.CreateTemp(stateDir, ".drained-*")
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	_, err = tmp.WriteString(line + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}

// Undrain lets new builds go to machine id again; was tells whether it was drained.
func Undrain(stateDir, id string) (was bool, err error) {
	err = os.Remove(statedir.Layout{Dir: stateDir}.Drained(id))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("undrain: %w", err)
	}
	return true, nil
}

// DrainMark is a machine's drain mark.
type DrainMark struct {
	Since time.Time // zero when the mark's time cannot be read
	Why   string
}

// Drained tells whether machine id is drained, and since when. A mark that cannot be
// read still drains: the administrator asked for it.
func Drained(stateDir, id string) (DrainMark, bool) {
	b, err := os.ReadFile(statedir.Layout{Dir: stateDir}.Drained(id))
	if errors.Is(err, fs.ErrNotExist) {
		return DrainMark{}, false
	}
	var d DrainMark
	if err == nil {
		first, why, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		d.Since, _ = time.Parse(time.RFC3339, first)
		d.Why = why
	}
	return d, true
}

// String is "since TIME (why)", or less when not known.
func (d DrainMark) String() string {
	var s string
	if !d.Since.IsZero() {
		s = "since " + d.Since.Format(time.RFC3339)
	}
	if d.Why != "" {
		if s != "" {
			s += " "
		}
		s += "(" + d.Why + ")"
	}
	return s
}
