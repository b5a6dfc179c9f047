package workerproto

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProtocolVersion is the version we announce: guix-daemon's 0x163 (major 0x100, minor 0x63).
const ProtocolVersion = 0x163

// minDaemonVersion is the oldest daemon we frame requests for (SetOptions per §4.10).
const minDaemonVersion = 0x10a

const (
	magic1 = 0x6e697863
	magic2 = 0x6478696f

	stderrNext  = 0x6f6c6d67
	stderrRead  = 0x64617461
	stderrWrite = 0x64617416
	stderrLast  = 0x616c7473
	stderrError = 0x63787470
)

var (
	// ErrNoDaemon: the stream ended (EOF or reset) before the daemon's magic. Through an
	// OpenSSH socket forward this is how a refused forward or a remote daemon that is down
	// looks; the caller may fall back to another way.
	ErrNoDaemon = errors.New("no daemon behind the socket (forwarding refused or daemon down)")
	// ErrNotADaemon: something answered, but not with the daemon's magic.
	ErrNotADaemon = errors.New("peer is not a guix-daemon")
	// ErrIncompatible: a daemon whose protocol we do not speak.
	ErrIncompatible = errors.New("incompatible daemon protocol")
	// ErrDaemonClosed: the daemon closed the connection, usually right after an error about
	// a request's arguments (a non-store path, an unknown operation, a bad option).
	ErrDaemonClosed = errors.New("daemon closed the connection")
	// ErrClosed: Close was called.
	ErrClosed = errors.New("connection closed")
)

// DaemonError is a request's failure reported by the daemon (STDERR_ERROR). Status is 1
// for ordinary errors; a failed BuildPaths uses 100 (permanent failure) or 101 (timeout).
// The connection stays usable unless the daemon closes it (then the next call returns
// an error wrapping ErrDaemonClosed).
type DaemonError struct {
	Message string
	Status  int
}

// Error is the message on one line: the daemon's can span several (an unauthorized
// key's s-expression does).
func (e *DaemonError) Error() string {
	var lines []string
	for l := range strings.Lines(e.Message) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	msg := strings.Join(lines, " ")
	if e.Status != 1 {
		return fmt.Sprintf("%s (status %d)", msg, e.Status)
	}
	return msg
}

// Conn is one connection to a guix-daemon: one worker process on the daemon's machine,
// whose temp roots, settings and signing agent live exactly as long as the Conn.
//
// A Conn is used by one goroutine at a time: the protocol allows one request in flight.
// Close may be called from any goroutine, and interrupts the request in flight.
// Cancelling the context of a call closes the connection: that is the only way to stop
// the daemon's work (it kills a build whose client is gone).
type Conn struct {
	// Log receives the daemon's messages and build logs (STDERR_NEXT) as they arrive,
	// chunk by chunk and not line-aligned. Nil drops them. Its errors are ignored.
	Log io.Writer
	// Trace, when set, is called once per operation with its name, the number of paths
	// it was given (for an import, the number imported), the bytes moved (export,
	// import, text), its duration and its error: enough for one -v line per operation.
	Trace func(op string, paths int, bytes int64, d time.Duration, err error)

	rwc     io.ReadWriteCloser
	r       *bufio.Reader
	w       *bufio.Writer
	version int // the daemon's
	minor   int // min(ours, the daemon's): what both sides frame by
	buf     []byte

	mu       sync.Mutex
	closed   bool         // the connection is closed, by Close or by us
	userShut bool         // Close was called
	broken   error        // why the Conn is unusable
	lastErr  *DaemonError // explains a later EOF
}

// Dial connects to the daemon socket (or a local forward of it) and performs the
// handshake. Errors from connecting are the net package's (e.g. wrapping
// syscall.ECONNREFUSED for a stale socket file).
func Dial(ctx context.Context, socket string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, err
	}
	return NewConn(ctx, nc)
}

// NewConn performs the handshake over rw, which the Conn then owns (it is closed when
// the handshake fails). rw.Close must be safe to call while another goroutine reads or
// writes, as it is for net.Conn and os.File.
func NewConn(ctx context.Context, rw io.ReadWriteCloser) (*Conn, error) {
	c := newConn(rw)
	if err := c.call(ctx, "handshake", 0, func(*stats) error { return c.handshake() }); err != nil {
		c.shut(err)
		return nil, err
	}
	return c, nil
}

func newConn(rw io.ReadWriteCloser) *Conn {
	return &Conn{rwc: rw, r: bufio.NewReaderSize(rw, 64<<10), w: bufio.NewWriterSize(rw, 64<<10),
		buf: make([]byte, 64<<10)}
}

// DaemonVersion is the protocol version the daemon announced (0x163 for current Guix).
func (c *Conn) DaemonVersion() int { return c.version }

// Close closes the connection; the daemon's worker then exits, dropping its temp roots.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.userShut = true
	c.mu.Unlock()
	return c.shut(ErrClosed)
}

// shut marks the Conn unusable for reason (if not already) and closes the stream once.
func (c *Conn) shut(reason error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = reason
	}
	if c.closed {
		return nil
	}
	c.closed = true
	return c.rwc.Close()
}

func (c *Conn) usable() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.broken == nil:
		return nil
	case c.userShut || c.broken == ErrClosed:
		return ErrClosed
	}
	return fmt.Errorf("connection unusable after an earlier failure: %w", c.broken)
}

// stats is what Trace reports of an operation besides its name, time and error.
type stats struct {
	paths int   // paths given (or, for an import, imported)
	bytes int64 // bytes exported, imported or added
}

// call runs one operation: it refuses to start on a broken Conn, closes the connection
// if ctx ends meanwhile, decides whether the Conn survives the error, and traces.
func (c *Conn) call(ctx context.Context, op string, paths int, fn func(s *stats) error) (err error) {
	start := time.Now()
	s := stats{paths: paths}
	defer func() {
		if c.Trace != nil {
			c.Trace(op, s.paths, s.bytes, time.Since(start), err)
		}
	}()
	if err := c.usable(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	stop := context.AfterFunc(ctx, func() { c.shut(fmt.Errorf("cancelled: %w", ctx.Err())) })
	err = fn(&s)
	if !stop() {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	var de *DaemonError
	var le *localError
	c.mu.Lock()
	user, prev := c.userShut, c.lastErr
	c.lastErr = nil
	if errors.As(err, &de) {
		c.lastErr = de // it may explain why the next call finds the connection closed
	}
	c.mu.Unlock()
	switch {
	case err == nil:
		return nil
	case de != nil || errors.As(err, &le):
		// The daemon refused, or our side failed after following the daemon's stream to
		// its end: the connection is in sync.
	case user:
		err = ErrClosed
	case gone(err) && !errors.Is(err, ErrNoDaemon):
		if prev != nil {
			err = fmt.Errorf("%w after its error %q: %w", ErrDaemonClosed, prev.Error(), err)
		} else {
			err = fmt.Errorf("%w: %w", ErrDaemonClosed, err)
		}
		c.shut(err)
	default:
		c.shut(err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// gone tells whether err means the peer closed or reset the stream.
func gone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// localError is a failure of our own reader or writer during a transfer, after which the
// daemon's stream was still read to its end, so the connection remains in sync.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

func (c *Conn) handshake() error {
	if err := c.flushed(WriteInt(c.w, magic1)); err != nil {
		if gone(err) {
			return fmt.Errorf("%w: %w", ErrNoDaemon, err)
		}
		return err
	}
	m, err := ReadLong(c.r)
	switch {
	case err == io.EOF || errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w: %w", ErrNoDaemon, err)
	case err == io.ErrUnexpectedEOF:
		return fmt.Errorf("%w: magic cut short", ErrNotADaemon)
	case err != nil:
		return err
	case m != magic2:
		return fmt.Errorf("%w: magic %#x instead of %#x", ErrNotADaemon, m, magic2)
	}
	v, err := ReadInt(c.r)
	if err != nil {
		return noEOF(err)
	}
	if v&0xff00 != ProtocolVersion&0xff00 || v < minDaemonVersion {
		return fmt.Errorf("%w: daemon speaks %#x, we speak %#x (and down to %#x)", ErrIncompatible, v, ProtocolVersion, minDaemonVersion)
	}
	c.version, c.minor = int(v), int(min(v, ProtocolVersion)&0xff)
	err = WriteInt(c.w, ProtocolVersion)
	if c.minor >= 14 && err == nil {
		err = WriteInt(c.w, 0) // no CPU affinity
	}
	if c.minor >= 11 && err == nil {
		err = WriteInt(c.w, 1) // reserve space: 0 would delete the daemon's GC reserve
	}
	if err := c.flushed(err); err != nil {
		return err
	}
	return c.stderr(nil)
}

// flushed flushes the request unless writing it already failed.
func (c *Conn) flushed(err error) error {
	if err != nil {
		return err
	}
	return c.w.Flush()
}

// transfer is the data side of a request: export chunks go to out, import data comes
// from in. The first error of either is kept and the daemon's stream still read to its
// end.
type transfer struct {
	out    io.Writer
	outErr error
	in     io.Reader
	inErr  error
	n      int64
}

// stderr reads the STDERR codes that precede every reply, until LAST (nil) or ERROR
// (*DaemonError). Nothing is written meanwhile except answers to READ (§1).
func (c *Conn) stderr(t *transfer) error {
	if t == nil {
		t = &transfer{}
	}
	for {
		code, err := ReadInt(c.r)
		if err != nil {
			return err
		}
		switch code {
		case stderrNext:
			b, err := readStrInto(c.r, c.buf)
			if err != nil {
				return err
			}
			if c.Log != nil {
				c.Log.Write(b)
			}
		case stderrWrite:
			b, err := readStrInto(c.r, c.buf)
			if err != nil {
				return err
			}
			if t.out == nil {
				return fmt.Errorf("%w: unexpected data (STDERR_WRITE) from the daemon", ErrProtocol)
			}
			if t.outErr == nil {
				var k int
				k, t.outErr = t.out.Write(b)
				t.n += int64(k)
			}
		case stderrRead:
			if err := c.answerRead(t); err != nil {
				return err
			}
		case stderrLast:
			return nil
		case stderrError:
			msg, err := ReadStr(c.r)
			if err != nil {
				return noEOF(err)
			}
			status := uint32(1)
			if c.minor >= 8 {
				if status, err = ReadInt(c.r); err != nil {
					return noEOF(err)
				}
			}
			return &DaemonError{Message: string(msg), Status: int(status)}
		default:
			return fmt.Errorf("%w: unknown STDERR code %#x", ErrProtocol, code)
		}
	}
}

// answerRead replies to STDERR_READ n with 1..n bytes of t.in. When t.in has failed or
// ended, it replies with an empty string: the daemon then raises "unexpected
// end-of-file" after it started work, so the connection stays in sync.
func (c *Conn) answerRead(t *transfer) error {
	n, err := ReadInt(c.r)
	if err != nil {
		return noEOF(err)
	}
	if t.in == nil {
		return fmt.Errorf("%w: unexpected request for data (STDERR_READ) from the daemon", ErrProtocol)
	}
	if n == 0 {
		return fmt.Errorf("%w: daemon asked for 0 bytes", ErrProtocol)
	}
	var k int
	if t.inErr == nil {
		k, t.inErr = io.ReadAtLeast(t.in, c.buf[:min(int(n), len(c.buf))], 1)
		t.n += int64(k)
	}
	return c.flushed(WriteStr(c.w, c.buf[:k]))
}
