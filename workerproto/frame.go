package workerproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Limits on what a daemon may make us read. The daemon is on another machine and we
// run as root: a length field must never decide how much memory we take.
const (
	MaxStringLen = 64 << 20  // bytes in one str (a log chunk, an export chunk, a path)
	MaxListLen   = 1_000_000 // entries in one strs or pairs
)

// ErrProtocol is wrapped by every error about bytes that do not follow the protocol.
var ErrProtocol = errors.New("protocol error")

// Pair is one entry of a pairs list (SetOptions overrides).
type Pair struct{ Name, Value string }

var zeros [8]byte

// WriteLong writes a u64 little-endian.
func WriteLong(w io.Writer, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	_, err := w.Write(b[:])
	return err
}

// WriteInt writes a 32-bit value as the protocol's 8-byte int.
func WriteInt(w io.Writer, v uint32) error { return WriteLong(w, uint64(v)) }

// WriteBool writes 1 or 0 as an int.
func WriteBool(w io.Writer, v bool) error {
	if v {
		return WriteInt(w, 1)
	}
	return WriteInt(w, 0)
}

// WriteStr writes a length, the bytes and zero padding to a multiple of 8.
func WriteStr(w io.Writer, s []byte) error {
	if err := WriteLong(w, uint64(len(s))); err != nil {
		return err
	}
	if _, err := w.Write(s); err != nil {
		return err
	}
	_, err := w.Write(zeros[:padLen(len(s))])
	return err
}

// WriteStrs writes a count and that many strs.
func WriteStrs(w io.Writer, ss []string) error {
	if err := WriteLong(w, uint64(len(ss))); err != nil {
		return err
	}
	for _, s := range ss {
		if err := WriteStr(w, []byte(s)); err != nil {
			return err
		}
	}
	return nil
}

// WritePairs writes a count and that many (name, value) strs.
func WritePairs(w io.Writer, ps []Pair) error {
	if err := WriteLong(w, uint64(len(ps))); err != nil {
		return err
	}
	for _, p := range ps {
		if err := WriteStr(w, []byte(p.Name)); err != nil {
			return err
		}
		if err := WriteStr(w, []byte(p.Value)); err != nil {
			return err
		}
	}
	return nil
}

func padLen(n int) int { return (8 - n%8) % 8 }

// ReadLong reads a u64 little-endian. A clean end of stream before it is io.EOF (the
// peer closed between two values), a partial one io.ErrUnexpectedEOF.
func ReadLong(r io.Reader) (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// ReadInt reads an int and refuses one that does not fit 32 bits, as the daemon does.
func ReadInt(r io.Reader) (uint32, error) {
	v, err := ReadLong(r)
	if err != nil {
		return 0, err
	}
	if v>>32 != 0 {
		return 0, fmt.Errorf("%w: int %#x does not fit 32 bits", ErrProtocol, v)
	}
	return uint32(v), nil
}

// ReadBool reads an int; any non-zero value is true.
func ReadBool(r io.Reader) (bool, error) {
	v, err := ReadInt(r)
	return v != 0, err
}

// ReadStr reads a str of at most MaxStringLen bytes.
func ReadStr(r io.Reader) ([]byte, error) { return readStrInto(r, nil) }

// readStrInto reads a str, reusing buf when it is large enough. A big string is read in
// steps so that memory grows with the bytes that actually arrive, not with the length a
// peer announced.
func readStrInto(r io.Reader, buf []byte) ([]byte, error) {
	n, err := ReadLong(r)
	if err != nil {
		return nil, err
	}
	if n > MaxStringLen {
		return nil, fmt.Errorf("%w: string of %d bytes (limit %d)", ErrProtocol, n, MaxStringLen)
	}
	var b []byte
	if n <= uint64(cap(buf)) || n <= 64<<10 {
		if b = buf[:0]; n > uint64(cap(buf)) {
			b = make([]byte, n)
		}
		b = b[:n]
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, noEOF(err)
		}
	} else {
		var bb bytes.Buffer
		if _, err := io.CopyN(&bb, r, int64(n)); err != nil {
			return nil, noEOF(err)
		}
		b = bb.Bytes()
	}
	var pad [8]byte
	if _, err := io.ReadFull(r, pad[:padLen(int(n))]); err != nil {
		return nil, noEOF(err)
	}
	if pad != zeros {
		return nil, fmt.Errorf("%w: non-zero padding after a string of %d bytes", ErrProtocol, n)
	}
	return b, nil
}

// noEOF turns a clean EOF inside a value into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readCount reads the length of a list.
func readCount(r io.Reader) (int, error) {
	n, err := ReadLong(r)
	if err != nil {
		return 0, err
	}
	if n > MaxListLen {
		return 0, fmt.Errorf("%w: list of %d entries (limit %d)", ErrProtocol, n, MaxListLen)
	}
	return int(n), nil
}

// ReadStrs reads a count and that many strs (at most MaxListLen).
func ReadStrs(r io.Reader) ([]string, error) {
	n, err := readCount(r)
	if err != nil {
		return nil, err
	}
	ss := make([]string, 0, min(n, 1024))
	for range n {
		s, err := ReadStr(r)
		if err != nil {
			return nil, noEOF(err)
		}
		ss = append(ss, string(s))
	}
	return ss, nil
}

// ReadPairs reads a count and that many (name, value) strs (at most MaxListLen).
func ReadPairs(r io.Reader) ([]Pair, error) {
	n, err := readCount(r)
	if err != nil {
		return nil, err
	}
	ps := make([]Pair, 0, min(n, 1024))
	for range n {
		k, err := ReadStr(r)
		if err != nil {
			return nil, noEOF(err)
		}
		v, err := ReadStr(r)
		if err != nil {
			return nil, noEOF(err)
		}
		ps = append(ps, Pair{string(k), string(v)})
	}
	return ps, nil
}
