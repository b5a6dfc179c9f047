package storeio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
)

// ErrInvalidArchive is wrapped by every error about a malformed nar or export bundle
// (as opposed to an I/O or file system error), so callers can tell a bad transfer from
// a local failure.
var ErrInvalidArchive = errors.New("invalid archive")

// wireReader reads the archive primitives (8-byte little-endian integers; strings as
// a length, the bytes and zero padding to a multiple of 8) with io.ReadFull only,
// so it never consumes a byte beyond what it was asked for. When h is set, every byte
// read is also written to h (the hash a signature covers).
type wireReader struct {
	r       io.Reader
	h       hash.Hash
	n       int64 // bytes consumed so far
	buf     [8]byte
	scratch []byte
}

func (w *wireReader) read(p []byte) error {
	n, err := io.ReadFull(w.r, p)
	w.n += int64(n)
	if w.h != nil {
		w.h.Write(p[:n])
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated input: %w", ErrInvalidArchive, err)
	}
	return err
}

func (w *wireReader) readInt() (uint64, error) {
	if err := w.read(w.buf[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(w.buf[:]), nil
}

// readBytes reads a string of at most max bytes. The returned slice is only valid until
// the next call.
func (w *wireReader) readBytes(max int) ([]byte, error) {
	n, err := w.readInt()
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%w: string of %d bytes where at most %d are allowed", ErrInvalidArchive, n, max)
	}
	if cap(w.scratch) < int(n) {
		w.scratch = make([]byte, n)
	}
	b := w.scratch[:n]
	if err := w.read(b); err != nil {
		return nil, err
	}
	return b, w.padding(n)
}

func (w *wireReader) readString(max int) (string, error) {
	b, err := w.readBytes(max)
	return string(b), err
}

// padding consumes the zero bytes that follow a string of n bytes.
func (w *wireReader) padding(n uint64) error {
	pad := int((8 - n%8) % 8)
	if pad == 0 {
		return nil
	}
	if err := w.read(w.buf[:pad]); err != nil {
		return err
	}
	for _, c := range w.buf[:pad] {
		if c != 0 {
			return fmt.Errorf("%w: non-zero padding", ErrInvalidArchive)
		}
	}
	return nil
}

func (w *wireReader) expect(tok string) error {
	got, err := w.readBytes(len(tok))
	if err != nil {
		return fmt.Errorf("expecting %q: %w", tok, err)
	}
	if string(got) != tok {
		return fmt.Errorf("%w: expected %q, got %q", ErrInvalidArchive, tok, got)
	}
	return nil
}

// contentReader yields the next size bytes of a wireReader (a regular file's contents).
type contentReader struct {
	w         *wireReader
	remaining int64
}

func (c *contentReader) Read(p []byte) (int, error) {
	if c.remaining == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.remaining {
		p = p[:c.remaining]
	}
	n, err := c.w.r.Read(p)
	c.w.n += int64(n)
	c.remaining -= int64(n)
	if c.w.h != nil {
		c.w.h.Write(p[:n])
	}
	if err == io.EOF {
		if c.remaining > 0 {
			return n, fmt.Errorf("%w: truncated file contents: %w", ErrInvalidArchive, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	return n, err
}

// wireWriter writes the primitives, counting bytes and optionally hashing them.
type wireWriter struct {
	w   io.Writer
	h   hash.Hash
	n   int64
	buf [8]byte
}

func (w *wireWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	if w.h != nil {
		w.h.Write(p[:n])
	}
	return n, err
}

var zeros [8]byte

func (w *wireWriter) writeInt(v uint64) error {
	binary.LittleEndian.PutUint64(w.buf[:], v)
	_, err := w.Write(w.buf[:])
	return err
}

func (w *wireWriter) writePadding(n uint64) error {
	if pad := (8 - n%8) % 8; pad != 0 {
		_, err := w.Write(zeros[:pad])
		return err
	}
	return nil
}

func (w *wireWriter) writeString(s string) error {
	if err := w.writeInt(uint64(len(s))); err != nil {
		return err
	}
	if _, err := io.WriteString(w, s); err != nil {
		return err
	}
	return w.writePadding(uint64(len(s)))
}

func (w *wireWriter) writeStrings(ss ...string) error {
	for _, s := range ss {
		if err := w.writeString(s); err != nil {
			return err
		}
	}
	return nil
}

// writerOnly hides ReadFrom so io.CopyBuffer uses our buffer instead of allocating.
type writerOnly struct{ io.Writer }
