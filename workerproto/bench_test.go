package workerproto

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
)

// Export throughput through the STDERR loop against the baseline of copying the same
// framed bytes raw over the same kind of socket: the ratio is the loop's cost.
const benchItem = 16 << 20

// exportStream is a daemon's answer to ExportPath: the item in 64 KiB WRITE chunks.
func exportStream() []byte {
	var b tx
	chunk := string(bytes.Repeat([]byte{'n'}, 64<<10))
	for range benchItem / len(chunk) {
		b.write(chunk)
	}
	b.last().ints(1)
	return b.Bytes()
}

// benchPair returns a connected pair of Unix sockets.
func benchPair(b *testing.B) (net.Conn, net.Conn) {
	path := socket(b)
	l, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	ch := make(chan net.Conn)
	go func() { c, _ := l.Accept(); ch <- c }()
	c, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	return c, <-ch
}

func BenchmarkExportPath(b *testing.B) {
	stream := exportStream()
	client, daemon := benchPair(b)
	defer daemon.Close()
	c := newConn(client)
	c.version, c.minor = 0x163, 0x63
	defer c.Close()
	req := make([]byte, len(w().ints(opExportPath).str("/gnu/store/x").ints(0).Bytes()))
	go func() {
		for {
			if _, err := io.ReadFull(daemon, req); err != nil {
				return
			}
			daemon.Write(stream)
		}
	}()
	b.SetBytes(benchItem)
	for b.Loop() {
		if err := c.ExportPath(context.Background(), "/gnu/store/x", false, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExportBaselineRawCopy(b *testing.B) {
	stream := exportStream()
	client, daemon := benchPair(b)
	defer daemon.Close()
	defer client.Close()
	go func() {
		var one [1]byte
		for {
			if _, err := io.ReadFull(daemon, one[:]); err != nil {
				return
			}
			daemon.Write(stream)
		}
	}()
	buf := make([]byte, 64<<10) // as large as the Conn's read buffer
	b.SetBytes(benchItem)
	for b.Loop() {
		client.Write([]byte{1})
		for n := 0; n < len(stream); {
			k, err := client.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			n += k
		}
	}
}
