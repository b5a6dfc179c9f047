package hook

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// countingReader counts the bytes read through it (read by another goroutine).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// countingWriter counts the bytes written through it (read by another goroutine).
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// progressEvery is how often a long transfer says how far it got (Hook.ProgressEvery
// overrides it). Besides informing the user, each line resets the daemon's
// max-silent-time clock, which also runs while we transfer.
const progressEvery = 15 * time.Second

// reportProgress prints the bytes counted in n so far every progressEvery until stop
// is closed.
func (h *Hook) reportProgress(what string, n *atomic.Int64, stop <-chan struct{}) {
	h.everyProgress(stop, func() { h.note("%s: %s so far", what, mib(n.Load())) })
}

// everyProgress calls say every progress interval (Hook.ProgressEvery, else
// progressEvery) until stop is closed. Each line also resets the daemon's
// max-silent-time clock, which runs while we transfer or wait.
func (h *Hook) everyProgress(stop <-chan struct{}, say func()) {
	every := h.ProgressEvery
	if every <= 0 {
		every = progressEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			say()
		}
	}
}
