package workerproto

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// script is a stream that a Conn reads daemon bytes from and writes into nothing.
type script struct {
	io.Reader
	io.Writer
}

func (script) Close() error { return nil }

// fuzzConn is a Conn after a 0x163 handshake, reading the daemon's side from data.
func fuzzConn(data []byte) *Conn {
	c := newConn(script{bytes.NewReader(data), io.Discard})
	c.version, c.minor = 0x163, 0x63
	return c
}

// FuzzReply feeds arbitrary daemon bytes to each operation's STDERR loop and reply
// decoding: no panic, no hang, and a Conn that saw anything but a clean reply or a
// daemon error refuses the next call without reading.
func FuzzReply(f *testing.F) {
	hash := strings.Repeat("ab", 32)
	for _, seed := range []*tx{
		w().last().ints(1),
		w().next("log\n").last().strs("/gnu/store/a", "/gnu/store/b"),
		w().last().str("/gnu/store/d.drv", hash).strs("/gnu/store/r").ints(1796572419, 160),
		w().write("nix-archive-1").write("").last().ints(1),
		w().ints(stderrRead, 32768).ints(stderrRead, 1).last().strs("/gnu/store/a"),
		w().next("x").fail("build of `/gnu/store/x.drv' failed", 100),
		w().last().str("/gnu/store/x-t.drv"),
		w().ints(stderrNext, 1<<32-1),
		w().ints(0x53545254),
	} {
		for op := range 8 {
			f.Add(byte(op), seed.Bytes())
		}
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, op byte, data []byte) {
		c := fuzzConn(data)
		c.Log = io.Discard
		var err error
		switch op % 8 {
		case 0:
			_, err = c.IsValidPath(ctx, "/gnu/store/a")
		case 1:
			_, err = c.QueryValidPaths(ctx, []string{"/gnu/store/a"})
		case 2:
			_, err = c.QueryPathInfo(ctx, "/gnu/store/a")
		case 3:
			_, err = c.QueryReferences(ctx, "/gnu/store/a")
		case 4:
			_, err = c.QueryDeriver(ctx, "/gnu/store/a")
		case 5:
			err = c.ExportPath(ctx, "/gnu/store/a", true, io.Discard)
		case 6:
			_, err = c.ImportPaths(ctx, strings.NewReader("bundle"))
		case 7:
			err = c.BuildPaths(ctx, []string{"/gnu/store/a.drv"}, BuildNormal)
		}
		var de *DaemonError
		if err == nil || errors.As(err, &de) {
			return
		}
		c.r.Reset(strings.NewReader(w().last().ints(1).String())) // a good reply it must not read
		if c.AddTempRoot(ctx, "/gnu/store/a") == nil {
			t.Fatalf("a Conn broken by %v served another call", err)
		}
	})
}
