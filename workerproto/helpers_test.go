package workerproto

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// tx builds daemon and client bytes by hand, independently of frame.go.
type tx struct{ bytes.Buffer }

func (b *tx) ints(vs ...uint64) *tx {
	for _, v := range vs {
		var x [8]byte
		binary.LittleEndian.PutUint64(x[:], v)
		b.Write(x[:])
	}
	return b
}

func (b *tx) str(ss ...string) *tx {
	for _, s := range ss {
		b.ints(uint64(len(s)))
		b.WriteString(s)
		for i := len(s); i%8 != 0; i++ {
			b.WriteByte(0)
		}
	}
	return b
}

func (b *tx) raw(s string) *tx { b.WriteString(s); return b }

func (b *tx) strs(ss ...string) *tx { return b.ints(uint64(len(ss))).str(ss...) }

func (b *tx) next(s string) *tx  { return b.ints(stderrNext).str(s) }
func (b *tx) write(s string) *tx { return b.ints(stderrWrite).str(s) }
func (b *tx) last() *tx          { return b.ints(stderrLast) }
func (b *tx) fail(msg string, status uint64) *tx {
	return b.ints(stderrError).str(msg).ints(status)
}

func w() *tx { return &tx{} }

// An act is one step of a scripted daemon.
type act func(c net.Conn) error

// expect reads exactly the bytes the client must have sent.
func expect(b *tx) act {
	want := bytes.Clone(b.Bytes())
	return func(c net.Conn) error {
		got := make([]byte, len(want))
		n, err := io.ReadFull(c, got)
		if err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("client sent\n% x (%v)\nwant\n% x", got[:n], err, want)
		}
		return nil
	}
}

func send(b *tx) act {
	data := bytes.Clone(b.Bytes())
	return func(c net.Conn) error { _, err := c.Write(data); return err }
}

// await waits until ch is closed: the client must have acted before the daemon goes on.
func await(ch <-chan struct{}, what string) act {
	return func(net.Conn) error {
		select {
		case <-ch:
			return nil
		case <-time.After(time.Minute):
			return fmt.Errorf("client never %s", what)
		}
	}
}

// closed checks that the client closed the connection without sending anything more.
func closed() act {
	return func(c net.Conn) error {
		b, err := io.ReadAll(c)
		if len(b) > 0 || err != nil {
			return fmt.Errorf("client sent % x (%v) instead of closing", b, err)
		}
		return nil
	}
}

// hangup closes the daemon's side.
func hangup() act { return func(c net.Conn) error { return c.Close() } }

// handshake is a 0x163 daemon's side of the handshake, with a message before LAST.
func handshake() []act {
	return []act{
		expect(w().ints(magic1)),
		send(w().ints(magic2, 0x163)),
		expect(w().ints(0x163, 0, 1)),
		send(w().next("acquiring lock\n").last()),
	}
}

// socket makes a Unix socket path short enough for sun_path.
func socket(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s")
}

// serve listens on a real Unix socket and plays acts on the first connection; the test
// fails if the client strays from the script. It returns the socket path.
func serve(t *testing.T, acts ...act) string {
	t.Helper()
	path := socket(t)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		accepted <- c
		defer c.Close()
		for i, a := range acts {
			if err := a(c); err != nil {
				t.Errorf("daemon step %d: %v", i, err)
				return
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-done:
			return
		case <-time.After(10 * time.Second): // generous: only a stuck script waits
		}
		l.Close()
		select {
		case c := <-accepted:
			c.SetDeadline(time.Now())
		default:
		}
		<-done
	})
	return path
}

// dial connects to a scripted daemon that starts with the 0x163 handshake.
func dial(t *testing.T, acts ...act) *Conn {
	t.Helper()
	c, err := Dial(context.Background(), serve(t, append(handshake(), acts...)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// signal is a writer that closes a channel once it has seen a given text.
type signal struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	once sync.Once
	ch   chan struct{}
	fn   func()
}

func newSignal(want string, fn func()) *signal {
	return &signal{want: want, ch: make(chan struct{}), fn: fn}
}

func (s *signal) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.buf.Write(p)
	seen := bytes.Contains(s.buf.Bytes(), []byte(s.want))
	s.mu.Unlock()
	if seen {
		s.once.Do(func() {
			if s.fn != nil {
				s.fn()
			}
			close(s.ch)
		})
	}
	return len(p), nil
}

func (s *signal) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func mustDaemonError(t *testing.T, err error, status int, msg string) {
	t.Helper()
	var de *DaemonError
	if !errors.As(err, &de) || de.Status != status || !bytes.Contains([]byte(de.Message), []byte(msg)) {
		t.Fatalf("err = %v, want a DaemonError %q with status %d", err, msg, status)
	}
}
