package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"offload/machines"
	"offload/sshexec"
	"offload/storeio"
)

// Compression on the wire of the two bulk transfers: the inputs sent to a machine and
// the outputs brought back. BenchmarkTransfer/modes-* (BENCHMARKS.md has its figures)
// chose the default: ssh's zlib was the bottleneck of every transfer; on loopback
// nothing beats no compression, but zstd level 1 costs little more (it stores
// incompressible blocks as they are) and sends a fraction of the bytes of real store
// data, which pays on every link slower than about 1 Gb/s; gzip -1 is slow on random
// data. So "auto" takes zstd when the machine has it, else gzip, else ssh's compression.

// Compression is how one bulk transfer travels.
type Compression string

const (
	// CompressZstd: a zstd stream (level 1) over a connection without ssh compression.
	CompressZstd Compression = "zstd"
	// CompressGzip: a gzip stream (level 1) over a connection without ssh compression.
	CompressGzip Compression = "gzip"
	// CompressNone: the bare stream over a connection without ssh compression.
	CompressNone Compression = "none"
	// CompressSSH: the bare stream, with ssh compression as machines.scm says (the
	// machine's compression field): what the hook did before it compressed itself.
	CompressSSH Compression = "ssh"
)

// CompressionAuto is the default mode: per machine, zstd if it has zstd, else gzip if
// it has gzip, else ssh's own compression.
const CompressionAuto = "auto"

// CompressionEnv is the environment variable that sets the mode:
// auto (default), zstd, gzip, none or ssh.
const CompressionEnv = "OFFLOAD_COMPRESSION"

// ParseCompressionMode checks a value of OFFLOAD_COMPRESSION; "" means auto.
func ParseCompressionMode(s string) (string, error) {
	switch s = strings.ToLower(strings.TrimSpace(s)); s {
	case "":
		return CompressionAuto, nil
	case CompressionAuto, string(CompressZstd), string(CompressGzip), string(CompressNone), string(CompressSSH):
		return s, nil
	}
	return CompressionAuto, fmt.Errorf("%s=%q is not one of auto, zstd, gzip, none, ssh", CompressionEnv, s)
}

// ChooseCompression picks how an offload's two bulk streams travel to and from a
// machine that has the decompressors listed in has ("zstd", "gzip"), given the mode.
// The offload's one ssh connection is chosen before the machine says what it has, so
// it cannot switch to ssh's compression then: a machine with neither zstd nor gzip gets
// uncompressed streams unless the mode asked for ssh's compression from the start. A
// forced zstd or gzip that the machine lacks falls back the same way. note says why the
// choice is not the mode's, or what to install.
func ChooseCompression(mode string, has map[string]bool) (c Compression, note string) {
	best := CompressNone
	switch {
	case has[string(CompressZstd)]:
		best = CompressZstd
	case has[string(CompressGzip)]:
		best = CompressGzip
	}
	switch mode {
	case string(CompressNone), string(CompressSSH):
		return Compression(mode), ""
	case string(CompressZstd), string(CompressGzip):
		if has[mode] {
			return Compression(mode), ""
		}
		if best != CompressNone {
			return best, fmt.Sprintf("%s=%s but the machine has no %s; using %s", CompressionEnv, mode, mode, best)
		}
	}
	if best == CompressNone {
		note = "it has neither zstd nor gzip; transfers are uncompressed (install zstd there)"
		if mode != CompressionAuto {
			note = fmt.Sprintf("%s=%s but %s", CompressionEnv, mode, note)
		}
	}
	return best, note
}

// streamed tells whether we compress the stream ourselves.
func (c Compression) streamed() bool { return c == CompressZstd || c == CompressGzip }

// describe says what the byte counts of a transfer were, for the hook's messages: wire
// is what went through ssh, raw the export bundle itself.
func (c Compression) describe(wire, raw int64) string {
	switch c {
	case CompressZstd, CompressGzip:
		return fmt.Sprintf("%s on the wire, %s; %s uncompressed", mib(wire), c, mib(raw))
	case CompressNone:
		return fmt.Sprintf("%s on the wire, uncompressed", mib(wire))
	}
	return fmt.Sprintf("%s before ssh compression", mib(wire))
}

// target is how the offload's session reaches m. Unless the mode leaves compression to
// ssh, ssh compression is off: the bulk streams carry their own and the rest is small.
// The same setting as the probe's, so that both share one ssh connection (the shared
// connection's compression is fixed when it is opened).
func (h *Hook) target(m *machines.Machine) sshexec.Target {
	t := m.Target()
	if mode, _ := ParseCompressionMode(h.Conf.Compression); mode != string(CompressSSH) {
		t.Compression = "no"
	}
	return t
}

// parseMissing splits the output of missingScript into store paths and tools.
func parseMissing(out string) (paths []string, has map[string]bool) {
	has = map[string]bool{}
	for _, line := range strings.Split(out, "\n") {
		if tool, ok := strings.CutPrefix(line, toolPrefix); ok {
			has[strings.TrimSpace(tool)] = true
			continue
		}
		paths = append(paths, strings.Fields(line)...)
	}
	return paths, has
}

// AskMissing asks the machine t, in one round trip, which of paths it lacks and which
// of zstd and gzip it has: the session script's first question, on its own (for
// `offload test`). raw is the machine's whole answer.
func AskMissing(ctx context.Context, r *sshexec.Runner, t sshexec.Target, paths []string) (missing []string, has map[string]bool, raw string, err error) {
	var out bytes.Buffer
	err = r.RunRemote(ctx, t, []string{"sh", "-c", missingScript}, sshexec.Stdio{Stdin: strings.NewReader(strings.Join(paths, "\n") + "\n"), Stdout: &out})
	missing, has = parseMissing(out.String())
	return missing, has, out.String(), err
}

// newCompressor returns the writer that compresses into w with c (nil when c is not
// ours to compress). Level 1 for both: on a fast link the compressor is the
// bottleneck, and on a slow one level 1 already removes most of the redundancy.
func newCompressor(c Compression, w io.Writer) (io.WriteCloser, error) {
	switch c {
	case CompressZstd:
		return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest))
	case CompressGzip:
		return gzip.NewWriterLevel(w, gzip.BestSpeed)
	}
	return nil, nil
}

// maxZstdWindow bounds the memory a machine can make us use through the window size
// its zstd frames declare (`zstd -1` uses 1 MiB or less).
const maxZstdWindow = 64 << 20

// CorruptStreamError is a compressed stream from a machine that does not decompress.
// It counts as a refused archive (storeio.IsRefusal).
type CorruptStreamError struct {
	Compression Compression
	Err         error
}

func (e *CorruptStreamError) Error() string {
	return fmt.Sprintf("corrupt %s stream: %v", e.Compression, e.Err)
}

func (e *CorruptStreamError) Unwrap() error { return e.Err }

// Is makes the error a storeio.ErrInvalidArchive, so that storeio.IsRefusal knows it.
func (e *CorruptStreamError) Is(target error) bool { return target == storeio.ErrInvalidArchive }

// sourceReader remembers the error of the reader under a decompressor, to tell a
// broken transport (passed on as it is) from a corrupt stream.
type sourceReader struct {
	r   io.Reader
	n   int64
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// decompressor reads a stream compressed with c; it starts reading only when read
// (gzip reads its header at once).
type decompressor struct {
	c     Compression
	src   *sourceReader
	dec   io.Reader
	close func()
}

func newDecompressor(c Compression, r io.Reader) *decompressor {
	return &decompressor{c: c, src: &sourceReader{r: r}}
}

func (d *decompressor) Read(p []byte) (int, error) {
	if d.dec == nil {
		switch d.c {
		case CompressZstd:
			z, err := zstd.NewReader(d.src, zstd.WithDecoderMaxWindow(maxZstdWindow))
			if err != nil {
				return 0, fmt.Errorf("zstd decoder: %w", err)
			}
			d.dec, d.close = z, z.Close
		case CompressGzip:
			z, err := gzip.NewReader(d.src)
			if err != nil {
				return 0, d.fail(err)
			}
			d.dec, d.close = z, func() { z.Close() }
		default:
			return 0, fmt.Errorf("no decompressor for %q", d.c)
		}
	}
	n, err := d.dec.Read(p)
	if err == io.EOF && d.src.n == 0 {
		err = d.fail(err) // zstd takes no frames at all for a valid stream
	} else if err != nil && err != io.EOF {
		err = d.fail(err)
	}
	return n, err
}

// fail classifies a decompression error: the transport's own failure as it is, else
// a corrupt stream (a stream cut short included: the machine's exit status, checked
// by the caller, tells when that was the machine's export failing).
func (d *decompressor) fail(err error) error {
	if d.src.err != nil {
		return d.src.err
	}
	if err == io.EOF {
		err = errors.New("empty stream")
	}
	return &CorruptStreamError{Compression: d.c, Err: err}
}

// Close releases the decoder's goroutines and memory.
func (d *decompressor) Close() {
	if d.close != nil {
		d.close()
	}
}
