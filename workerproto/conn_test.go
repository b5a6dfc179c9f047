package workerproto

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHandshakeFramesByDaemonVersion(t *testing.T) {
	for _, tc := range []struct {
		daemon uint64
		client *tx // what follows our version
	}{
		{0x163, w().ints(0, 1)}, // affinity 0, reserve space 1
		{0x164, w().ints(0, 1)}, // a newer daemon: we still frame as 0x163
		{0x10e, w().ints(0, 1)}, // affinity since minor 14
		{0x10b, w().ints(1)},    // reserve space since minor 11
		{0x10a, w()},
	} {
		c, err := Dial(context.Background(), serve(t,
			expect(w().ints(magic1)),
			send(w().ints(magic2, tc.daemon)),
			expect(w().ints(0x163).raw(tc.client.String())),
			send(w().next("hello\n").last()),
		))
		if err != nil {
			t.Fatalf("daemon %#x: %v", tc.daemon, err)
		}
		if c.DaemonVersion() != int(tc.daemon) {
			t.Errorf("DaemonVersion() = %#x, want %#x", c.DaemonVersion(), tc.daemon)
		}
		c.Close()
	}
}

func TestHandshakeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		acts []act
		want error
	}{
		{"other major", []act{expect(w().ints(magic1)), send(w().ints(magic2, 0x263))}, ErrIncompatible},
		{"too old", []act{expect(w().ints(magic1)), send(w().ints(magic2, 0x109))}, ErrIncompatible},
		{"wrong magic", []act{expect(w().ints(magic1)), send(w().ints(0x6478696e, 0x163))}, ErrNotADaemon},
		{"text instead of magic", []act{expect(w().ints(magic1)), send(w().raw("SSH-2.0-OpenSSH_9.2p1\r\n"))}, ErrNotADaemon},
		{"closed at once", []act{hangup()}, ErrNoDaemon},
		{"closed after our magic", []act{expect(w().ints(magic1)), hangup()}, ErrNoDaemon},
		{"reset after our magic", []act{resetAfterInput()}, ErrNoDaemon},
		{"closed after the magic", []act{expect(w().ints(magic1)), send(w().ints(magic2)), hangup()}, ErrProtocol},
		{"store cannot be opened", []act{
			expect(w().ints(magic1)), send(w().ints(magic2, 0x163)), expect(w().ints(0x163, 0, 1)),
			send(w().fail("cannot open the store", 1)), hangup()}, nil},
	} {
		_, err := Dial(context.Background(), serve(t, tc.acts...))
		switch {
		case tc.want == nil:
			mustDaemonError(t, err, 1, "cannot open the store")
		case tc.want == ErrProtocol:
			if err == nil || errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), "handshake") {
				t.Errorf("%s: err = %v, want a handshake error that is not ErrNoDaemon", tc.name, err)
			}
		case !errors.Is(err, tc.want):
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// resetAfterInput waits until the client has written and closes without reading it, which
// makes the client's next read fail with ECONNRESET: what an OpenSSH forward whose channel
// open failed does to a client that wrote first.
func resetAfterInput() act {
	return func(c net.Conn) error {
		raw, err := c.(*net.UnixConn).SyscallConn()
		if err != nil {
			return err
		}
		// Peek rather than trust a wake-up: one that came before Read began is dropped.
		var b [1]byte
		if err := raw.Read(func(fd uintptr) bool {
			n, _, _ := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return n > 0
		}); err != nil {
			return err
		}
		return c.Close()
	}
}

func TestResetLooksLikeNoDaemon(t *testing.T) {
	_, err := Dial(context.Background(), serve(t, resetAfterInput()))
	if !errors.Is(err, ErrNoDaemon) || !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("err = %v, want ErrNoDaemon from ECONNRESET", err)
	}
}

func TestDialStaleSocketIsNotNoDaemon(t *testing.T) {
	path := socket(t)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // the file stays, as an ssh forward's does when ssh exits
	_, err = Dial(context.Background(), path)
	if !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, ErrNoDaemon) {
		t.Errorf("err = %v, want ECONNREFUSED", err)
	}
}

// The daemon closes the connection after an error in a request's arguments; the next call
// must say so at once, naming that error.
func TestErrorThenCloseMakesNextCallFail(t *testing.T) {
	c := dial(t,
		expect(w().ints(opQueryPathInfo).str("/tmp/foo")),
		send(w().fail("path `/tmp/foo' is not in the store", 1)),
		hangup(),
	)
	ctx := context.Background()
	_, err := c.QueryPathInfo(ctx, "/tmp/foo")
	mustDaemonError(t, err, 1, "is not in the store")
	_, err = c.IsValidPath(ctx, "/gnu/store/x")
	if !errors.Is(err, ErrDaemonClosed) || !strings.Contains(err.Error(), "is not in the store") {
		t.Fatalf("err = %v, want ErrDaemonClosed naming the earlier error", err)
	}
	_, err2 := c.IsValidPath(ctx, "/gnu/store/x")
	if !errors.Is(err2, ErrDaemonClosed) || !strings.Contains(err2.Error(), "unusable") {
		t.Errorf("third call: %v", err2)
	}
}

// Only the error just before the close explains it.
func TestOlderErrorNotBlamedForClose(t *testing.T) {
	c := dial(t,
		expect(w().ints(opIsValidPath).str("/tmp/foo")),
		send(w().fail("path `/tmp/foo' is not in the store", 1)),
		expect(w().ints(opIsValidPath).str("/gnu/store/a")),
		send(w().last().ints(1)),
		hangup(),
	)
	c.IsValidPath(bg, "/tmp/foo")
	c.IsValidPath(bg, "/gnu/store/a")
	_, err := c.IsValidPath(bg, "/gnu/store/a")
	if !errors.Is(err, ErrDaemonClosed) || strings.Contains(err.Error(), "/tmp/foo") {
		t.Errorf("err = %v, want ErrDaemonClosed without the older error", err)
	}
}

func TestErrorKeepsConnection(t *testing.T) {
	c := dial(t,
		expect(w().ints(opIsValidPath).str("/tmp/foo")),
		send(w().fail("path `/tmp/foo' is not in the store", 1)),
		expect(w().ints(opIsValidPath).str("/gnu/store/.links")),
		send(w().last().ints(0)),
	)
	_, err := c.IsValidPath(context.Background(), "/tmp/foo")
	mustDaemonError(t, err, 1, "not in the store")
	if v, err := c.IsValidPath(context.Background(), "/gnu/store/.links"); v || err != nil {
		t.Errorf("IsValidPath = %v, %v", v, err)
	}
}

func TestGarbageCodeBreaksConnection(t *testing.T) {
	c := dial(t,
		expect(w().ints(opIsValidPath).str("/gnu/store/a")),
		send(w().next("ok\n").ints(0x53545254)), // Nix's START_ACTIVITY: not Guix's
		closed(),
	)
	_, err := c.IsValidPath(context.Background(), "/gnu/store/a")
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "0x53545254") {
		t.Fatalf("err = %v, want a protocol error naming the code", err)
	}
	err = c.AddTempRoot(context.Background(), "/gnu/store/a")
	if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "unusable") {
		t.Errorf("next call: %v", err)
	}
}

func TestHostileLengthBreaksConnection(t *testing.T) {
	c := dial(t,
		expect(w().ints(opQueryDeriver).str("/gnu/store/a")),
		send(w().ints(stderrNext, 1<<32-1)),
		closed(),
	)
	_, err := c.QueryDeriver(context.Background(), "/gnu/store/a")
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("err = %v, want a protocol error", err)
	}
}

// Build logs are relayed chunk by chunk as they come: the daemon sends its second chunk
// only once the first has reached Log.
func TestLogRelayedAsItComes(t *testing.T) {
	log := newSignal("building t-ok", nil)
	c := dial(t,
		expect(w().ints(opBuildPaths).strs("/gnu/store/x-t-ok.drv").ints(0)),
		send(w().next("@ build-started /gnu/store/x-t-ok.drv -\n").next("building t-ok")),
		await(log.ch, "relayed the first chunks"),
		send(w().next(" nonce=c1\n").last().ints(1)),
	)
	c.Log = log
	if err := c.BuildPaths(context.Background(), []string{"/gnu/store/x-t-ok.drv"}, BuildNormal); err != nil {
		t.Fatal(err)
	}
	if got, want := log.String(), "@ build-started /gnu/store/x-t-ok.drv -\nbuilding t-ok nonce=c1\n"; got != want {
		t.Errorf("log = %q, want %q", got, want)
	}
}

// Cancelling the context closes the connection (the daemon then kills the build), the
// call returns the context's error and the Conn refuses further calls.
func TestCancelClosesConnection(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gone := make(chan struct{})
	c := dial(t,
		expect(w().ints(opBuildPaths).strs("/gnu/store/x.drv").ints(0)),
		send(w().next("building\n")),
		closed(),
		func(net.Conn) error { close(gone); return nil },
	)
	c.Log = newSignal("building", cancel)
	err := c.BuildPaths(ctx, []string{"/gnu/store/x.drv"}, BuildNormal)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	select {
	case <-gone:
	case <-time.After(time.Minute):
		t.Fatal("the daemon never saw the connection close")
	}
	if _, err := c.IsValidPath(context.Background(), "/gnu/store/a"); !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v", err)
	}
}

func TestCloseFromAnotherGoroutine(t *testing.T) {
	c := dial(t,
		expect(w().ints(opImportPaths)),
		send(w().next("importing\n")),
		closed(),
	)
	c.Log = newSignal("importing", func() { go c.Close() })
	_, err := c.ImportPaths(context.Background(), strings.NewReader("x"))
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if _, err := c.IsValidPath(context.Background(), "/gnu/store/a"); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

func TestCancelledBeforeStartSendsNothing(t *testing.T) {
	c := dial(t, expect(w().ints(opIsValidPath).str("/gnu/store/a")), send(w().last().ints(1)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.IsValidPath(ctx, "/gnu/store/a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if v, err := c.IsValidPath(context.Background(), "/gnu/store/a"); !v || err != nil {
		t.Errorf("IsValidPath = %v, %v", v, err)
	}
}

func TestTraceOncePerOperation(t *testing.T) {
	type rec struct {
		op    string
		paths int
		bytes int64
		err   bool
	}
	var got []rec
	c := dial(t,
		expect(w().ints(opQueryValidPaths).strs("/gnu/store/a", "/gnu/store/b")),
		send(w().last().strs("/gnu/store/a")),
		expect(w().ints(opExportPath).str("/gnu/store/a").ints(0)),
		send(w().write("12345").write("678").last().ints(1)),
		expect(w().ints(opAddTempRoot).str("/gnu/store/b")),
		send(w().fail("no", 1)),
		expect(w().ints(opImportPaths)),
		send(w().ints(stderrRead, 32768)),
		expect(w().str("bundle")),
		send(w().last().strs("/gnu/store/a", "/gnu/store/b")),
	)
	c.Trace = func(op string, paths int, bytes int64, d time.Duration, err error) {
		got = append(got, rec{op, paths, bytes, err != nil})
	}
	ctx := context.Background()
	c.QueryValidPaths(ctx, []string{"/gnu/store/a", "/gnu/store/b"})
	c.ExportPath(ctx, "/gnu/store/a", false, &strings.Builder{})
	c.AddTempRoot(ctx, "/gnu/store/b")
	c.ImportPaths(ctx, strings.NewReader("bundle"))
	want := []rec{{"query-valid-paths", 2, 0, false}, {"export-path", 1, 8, false}, {"add-temp-root", 1, 0, true},
		{"import-paths", 2, 6, false}}
	if len(got) != len(want) {
		t.Fatalf("traces %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("trace %d = %v, want %v", i, got[i], want[i])
		}
	}
}
