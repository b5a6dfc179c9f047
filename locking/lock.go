package locking

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pollInterval is how often Acquire retries a busy lock.
const pollInterval = 50 * time.Millisecond

// Lock is a held lock. Keep it until Release or the end of the process.
//
// It holds a bare descriptor, not an *os.File: no finalizer can close it, so a Lock that
// is dropped without Release stays held until the process exits, never shorter. (This is
// why it does not use gofrs/flock, whose Flock keeps an *os.File.) The descriptor is
// close-on-exec, so child processes do not inherit (and cannot prolong) the lock.
type Lock struct {
	path string
	fd   int // -1 once released
}

// Path returns the lock file's name.
func (l *Lock) Path() string { return l.path }

// Release unlocks and closes the lock file (which stays on disk). Releasing twice is
// harmless.
func (l *Lock) Release() error {
	if l == nil || l.fd < 0 {
		return nil
	}
	fd := l.fd
	l.fd = -1
	// Closing the only descriptor of the open file drops the flock.
	if err := syscall.Close(fd); err != nil {
		return fmt.Errorf("release lock %s: %w", l.path, err)
	}
	return nil
}

// TryAcquire takes the lock at path if it is free, creating the file (and its
// directory) if needed. It returns false, without error, when someone else holds it.
func TryAcquire(path, reason string) (*Lock, bool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	fd, err := openRetry(path)
	if err != nil {
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flockRetry(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		syscall.Close(fd)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("lock %s: %w", path, err)
	}
	// Say who holds it: "PID REASON\n", written over the last holder's line.
	line := []byte(strconv.Itoa(os.Getpid()) + " " + strings.Join(strings.Fields(reason), " ") + "\n")
	_, err = syscall.Pwrite(fd, line, 0)
	if err == nil {
		err = syscall.Ftruncate(fd, int64(len(line)))
	}
	if err != nil {
		syscall.Close(fd)
		return nil, false, fmt.Errorf("lock %s: record holder: %w", path, err)
	}
	return &Lock{path: path, fd: fd}, true, nil
}

func openRetry(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, 0o600)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

func flockRetry(fd, how int) error {
	for {
		err := syscall.Flock(fd, how)
		if err != syscall.EINTR {
			return err
		}
	}
}

// Acquire takes the lock at path, waiting for it until ctx is done. The error after a
// vain wait names the file and what its holder said it was doing.
func Acquire(ctx context.Context, path, reason string) (*Lock, error) {
	for {
		l, ok, err := TryAcquire(path, reason)
		if err != nil {
			return nil, err
		}
		if ok {
			return l, nil
		}
		select {
		case <-ctx.Done():
			pid, why, held, _ := Holder(path)
			if held && pid > 0 {
				return nil, fmt.Errorf("waiting for lock %s, held by process %d (%s): %w", path, pid, why, ctx.Err())
			}
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// Holder says who holds the lock at path: held is whether someone holds it now (tested
// by trying to take it, and letting it go at once); pid and reason are what the last
// holder wrote into the file. A missing file is a free lock.
func Holder(path string) (pid int, reason string, held bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("lock %s: %w", path, err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	p, r, _ := strings.Cut(string(line), " ")
	pid, _ = strconv.Atoi(p)
	reason = r

	f, err := os.Open(path)
	if err != nil {
		return 0, "", false, fmt.Errorf("lock %s: %w", path, err)
	}
	defer f.Close()
	switch err := flockRetry(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); {
	case err == nil:
		flockRetry(int(f.Fd()), syscall.LOCK_UN)
		return pid, reason, false, nil
	case errors.Is(err, syscall.EWOULDBLOCK):
		return pid, reason, true, nil
	default:
		return 0, "", false, fmt.Errorf("lock %s: %w", path, err)
	}
}

// AcquireSlot takes one of the build slots dir/0 .. dir/n-1 without waiting. It returns
// nil, -1, nil when all are busy.
func AcquireSlot(dir string, n int, reason string) (*Lock, int, error) {
	for i := 0; i < n; i++ {
		l, ok, err := TryAcquire(filepath.Join(dir, strconv.Itoa(i)), reason)
		if err != nil {
			return nil, -1, err
		}
		if ok {
			return l, i, nil
		}
	}
	return nil, -1, nil
}
