package hook

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestProgressLines: a transfer in progress prints how far it got, so that the
// daemon's silence clock does not run out during a long one.
func TestProgressLines(t *testing.T) {
	out := &syncBuffer{}
	h := &Hook{Out: out, ProgressEvery: 5 * time.Millisecond}
	c := &countingReader{r: strings.NewReader(strings.Repeat("x", 3<<20))}
	io.Copy(io.Discard, c)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { h.reportProgress("sending to 'm'", &c.n, stop); close(done) }()
	for i := 0; i < 200 && strings.Count(out.String(), "\n") < 2; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	<-done
	got := out.String()
	if !strings.Contains(got, "offload: sending to 'm': 3.0 MiB so far\n") {
		t.Fatalf("got %q", got)
	}
	n := strings.Count(got, "\n")
	time.Sleep(20 * time.Millisecond)
	if strings.Count(out.String(), "\n") != n {
		t.Error("progress lines went on after the transfer ended")
	}
}
