package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// tempRoots is a connection's temporary roots file, $GUIX_STATE_DIRECTORY/temproots/
// PID-N (the real daemon names it by its worker's pid; here N tells the connections of
// one process apart): the paths, each ended by a NUL, appended as they are added. It
// is made on the first root and removed when the connection ends, so that a test can
// see the roots vanish.
type tempRoots struct {
	file string
	mu   sync.Mutex
	seen map[string]bool
}

func (t *tempRoots) add(p string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen[p] {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(t.file), 0o755); err != nil {
		return fmt.Errorf("add temporary root: %w", err)
	}
	f, err := os.OpenFile(t.file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("add temporary root: %w", err)
	}
	_, err = f.WriteString(p + "\x00")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("add temporary root: %w", err)
	}
	if t.seen == nil {
		t.seen = map[string]bool{}
	}
	t.seen[p] = true
	return nil
}

func (t *tempRoots) remove() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.seen != nil {
		os.Remove(t.file)
	}
}
