package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// worker serves one connection, as the real daemon's forked worker process does: the
// handshake, then requests one at a time, each answered through the STDERR loop.
type worker struct {
	d       *daemon
	id      int64
	conn    *net.UnixConn
	in      reader
	trusted bool
	minor   uint64 // the client's protocol minor

	outMu sync.Mutex
	out   *bufio.Writer
	wr    writer

	set   settings
	roots tempRoots
	agent *agent // started on the first signature or check, for the connection's life

	// Per request.
	working bool
	cancel  context.CancelFunc
	watch   chan watchResult
}

// settings are what SetOptions sets, for the rest of the connection.
type settings struct {
	keepGoing       bool
	verbosity       uint64
	buildVerbosity  uint64
	printBuildTrace bool
	useSubstitutes  bool
	maxSilent       int
	timeout         int
}

// watchResult is what arrived on the socket while a request was being worked on.
type watchResult int

const (
	watchNothing watchResult = iota
	watchData                // a byte: the client broke the one-request rule
	watchClosed              // EOF or an error: the client is gone
)

// opError is an error a request ends with; status is the STDERR_ERROR status.
type opError struct {
	msg    string
	status uint64
	close  bool // the real daemon closes the connection after it, even during work
}

func (e *opError) Error() string { return e.msg }

func errorf(format string, args ...any) error {
	return &opError{msg: fmt.Sprintf(format, args...), status: 1}
}

// errClosed ends a connection without another byte (the client went away, or a
// hostile mode closes it).
var errClosed = errors.New("connection closed")

func newWorker(d *daemon, c *net.UnixConn, id int64) *worker {
	w := &worker{d: d, id: id, conn: c, in: reader{bufio.NewReaderSize(c, 32<<10)}, out: bufio.NewWriterSize(c, 64<<10)}
	w.wr = writer{w.out}
	// The real daemon reads its version defaults before any SetOptions: info messages
	// are sent (verbosity lvlInfo).
	w.set.verbosity = 1
	w.roots = tempRoots{file: fmt.Sprintf("%s/temproots/%d-%d", d.state, os.Getpid(), id)}
	w.trusted = peerUID(c) == 0 && !d.rootUntrusted
	return w
}

// peerUID returns the connecting process's uid (SO_PEERCRED), -1 if unknown.
func peerUID(c *net.UnixConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

// serve runs the connection to its end, then drops everything it held: its temporary
// roots and its agent.
func (w *worker) serve(ctx context.Context) {
	defer w.conn.Close()
	defer w.roots.remove()
	switch mode, _ := w.d.hostile(); mode {
	case "no-magic":
		return
	case "hang":
		// Accept, never answer; end when the client gives up (or the daemon stops).
		io.Copy(io.Discard, w.conn)
		return
	}
	if err := w.handshake(); err != nil {
		return
	}
	for ctx.Err() == nil {
		op, err := w.in.int()
		if errors.Is(err, errTooBig) {
			w.fail(err)
			return
		}
		if err != nil {
			return // the client closed the connection between requests
		}
		if err := w.request(ctx, op); err != nil {
			return
		}
	}
}

// handshake is WORKER-PROTOCOL.md §2. A wrong magic closes the connection without a
// byte.
func (w *worker) handshake() error {
	magic, err := w.in.int()
	if err != nil || magic != workerMagic1 {
		return errClosed
	}
	w.wr.int(workerMagic2)
	w.wr.int(protocolVersion)
	if err := w.out.Flush(); err != nil {
		return err
	}
	v, err := w.in.int()
	if err != nil {
		return err
	}
	w.minor = v & 0xff
	if w.minor >= 14 {
		if aff, err := w.in.int(); err != nil {
			return err
		} else if aff != 0 {
			if _, err := w.in.int(); err != nil { // the CPU to pin to
				return err
			}
		}
	}
	if w.minor >= 11 {
		if _, err := w.in.int(); err != nil { // reserveSpace
			return err
		}
	}
	// Forking the worker and opening the store.
	w.d.costs.sleep(w.d.costs.handshake)
	w.wr.int(stderrLast)
	return w.out.Flush()
}

// request reads and serves one request. A nil error keeps the connection; any other
// ends it (after whatever the error rule says to send).
func (w *worker) request(ctx context.Context, opcode uint64) error {
	h, ok := ops[opcode]
	if !ok {
		return w.fail(errorf("invalid operation %d", opcode))
	}
	workCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.working, w.cancel, w.watch = false, cancel, nil
	reply, err := h(w, workCtx)
	switch w.stopWatch() {
	case watchData:
		return w.fail(errorf("EOF expected (protocol error?)"))
	case watchClosed:
		return errClosed
	}
	if errors.Is(err, errClosed) {
		return err
	}
	if mode, _ := w.d.hostile(); mode == "garbage" {
		w.outMu.Lock()
		w.wr.int(0x6261640a) // no STDERR code
		w.out.Flush()
		w.outMu.Unlock()
		return errClosed
	}
	var opErr *opError
	if err != nil && !errors.As(err, &opErr) {
		// A failure to read the request: the client sent something broken or left.
		return w.fail(errorf("%v", err))
	}
	if err != nil {
		if !w.working || opErr.close {
			// The real daemon closes after an error raised while it still read the
			// request's arguments (§3).
			return w.fail(err)
		}
		return w.sendError(opErr)
	}
	w.outMu.Lock()
	defer w.outMu.Unlock()
	w.wr.int(stderrLast)
	if reply != nil {
		reply(w.wr)
	}
	return w.out.Flush()
}

// fail sends STDERR_ERROR and ends the connection.
func (w *worker) fail(err error) error {
	var opErr *opError
	if !errors.As(err, &opErr) {
		opErr = &opError{msg: err.Error(), status: 1}
	}
	w.sendError(opErr)
	return errClosed
}

func (w *worker) sendError(e *opError) error {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	w.wr.int(stderrError)
	w.wr.str(e.msg)
	if w.minor >= 8 {
		w.wr.int(e.status)
	}
	return w.out.Flush()
}

// startWork marks the end of reading a request's arguments: from here an error keeps
// the connection. Unless the request pulls data itself (ImportPaths), the socket is
// watched: a byte from the client breaks the protocol, an EOF interrupts the work.
func (w *worker) startWork(watch bool) {
	w.working = true
	if !watch {
		return
	}
	if w.in.r.Buffered() > 0 {
		// Sent with the request, before the answer: the real daemon sometimes swallows
		// that in its read buffer; a client must not rely on it, so refuse it always.
		w.watch = make(chan watchResult, 1)
		w.watch <- watchData
		w.cancel()
		return
	}
	ch := make(chan watchResult, 1)
	w.watch = ch
	go func() {
		_, err := w.in.r.Peek(1)
		var ne net.Error
		switch {
		case err == nil:
			ch <- watchData
		case errors.As(err, &ne) && ne.Timeout():
			ch <- watchNothing
			return
		default:
			ch <- watchClosed
		}
		w.cancel()
	}()
}

// stopWatch ends the watch and returns what it saw.
func (w *worker) stopWatch() watchResult {
	if w.watch == nil {
		return watchNothing
	}
	w.conn.SetReadDeadline(time.Unix(1, 0))
	res := <-w.watch
	w.conn.SetReadDeadline(time.Time{})
	w.watch = nil
	return res
}

// next sends text as STDERR_NEXT.
func (w *worker) next(text string) {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	w.wr.int(stderrNext)
	w.wr.str(text)
	w.out.Flush()
}

// info sends a daemon message of level lvlInfo if the verbosity asks for it.
func (w *worker) info(format string, args ...any) { w.msg(lvlInfo, format, args...) }

// msg sends a daemon message of the given level if the verbosity asks for it.
func (w *worker) msg(level uint64, format string, args ...any) {
	if w.set.verbosity >= level {
		w.next(fmt.Sprintf(format, args...))
	}
}
