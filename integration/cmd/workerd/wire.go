package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// The daemon's side of the worker protocol's framing (WORKER-PROTOCOL.md §1): 8-byte
// little-endian integers, strings padded to 8 bytes, lists of strings. Written here,
// apart from the hook's client, so that one misunderstanding cannot hide in both.

const (
	workerMagic1    = 0x6e697863
	workerMagic2    = 0x6478696f
	protocolVersion = 0x163

	stderrNext  = 0x6f6c6d67
	stderrRead  = 0x64617461
	stderrWrite = 0x64617416
	stderrLast  = 0x616c7473
	stderrError = 0x63787470

	exportMagic = 0x4558494e

	// maxString bounds one string argument (a .drv's text is the largest).
	maxString = 64 << 20
)

// errTooBig is readInt's refusal of a value that does not fit 32 bits.
var errTooBig = errors.New("implementation cannot deal with > 32-bit integers")

// reader reads the framing from the client.
type reader struct{ r *bufio.Reader }

func (r reader) long() (uint64, error) {
	var b [8]byte
	if _, err := io.ReadFull(r.r, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// int reads a 32-bit value as the daemon's readInt does: bytes 4..7 must be zero.
func (r reader) int() (uint64, error) {
	v, err := r.long()
	if err == nil && v>>32 != 0 {
		return 0, errTooBig
	}
	return v, err
}

func (r reader) str() (string, error) {
	n, err := r.int()
	if err != nil {
		return "", err
	}
	if n > maxString {
		return "", fmt.Errorf("string of %d bytes is too long", n)
	}
	b := make([]byte, n+pad(n))
	if _, err := io.ReadFull(r.r, b); err != nil {
		return "", err
	}
	for _, c := range b[n:] {
		if c != 0 {
			return "", errors.New("non-zero padding")
		}
	}
	return string(b[:n]), nil
}

func (r reader) strs() ([]string, error) {
	n, err := r.int()
	if err != nil {
		return nil, err
	}
	var out []string
	for range n {
		s, err := r.str()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func pad(n uint64) uint64 { return (8 - n%8) % 8 }

// writer writes the framing to the client; the caller flushes.
type writer struct{ w *bufio.Writer }

func (w writer) int(v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	w.w.Write(b[:])
}

func (w writer) bool(v bool) {
	if v {
		w.int(1)
	} else {
		w.int(0)
	}
}

func (w writer) str(s string) {
	w.int(uint64(len(s)))
	w.w.WriteString(s)
	var zero [8]byte
	w.w.Write(zero[:pad(uint64(len(s)))])
}

// strs writes a set the way the daemon's std::set does: sorted, without duplicates.
func (w writer) strs(ss []string) {
	set := append([]string(nil), ss...)
	sort.Strings(set)
	out := set[:0]
	for i, s := range set {
		if i == 0 || s != set[i-1] {
			out = append(out, s)
		}
	}
	w.int(uint64(len(out)))
	for _, s := range out {
		w.str(s)
	}
}

// list writes strings in the order given (ImportPaths answers in stream order).
func (w writer) list(ss []string) {
	w.int(uint64(len(ss)))
	for _, s := range ss {
		w.str(s)
	}
}
