package workerproto

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(io.Writer) error
		want  *tx
		read  func(io.Reader) (any, error)
		value any
	}{
		{"int", func(w io.Writer) error { return WriteInt(w, 0x6e697863) }, w().ints(0x6e697863),
			func(r io.Reader) (any, error) { return ReadInt(r) }, uint32(0x6e697863)},
		{"int max", func(w io.Writer) error { return WriteInt(w, 1<<32-1) }, w().ints(1<<32 - 1),
			func(r io.Reader) (any, error) { return ReadInt(r) }, uint32(1<<32 - 1)},
		{"long", func(w io.Writer) error { return WriteLong(w, 130<<20<<10) }, w().ints(130 << 30),
			func(r io.Reader) (any, error) { return ReadLong(r) }, uint64(130 << 30)},
		{"bool", func(w io.Writer) error { return WriteBool(w, true) }, w().ints(1),
			func(r io.Reader) (any, error) { return ReadBool(r) }, true},
		{"empty str", func(w io.Writer) error { return WriteStr(w, nil) }, w().ints(0),
			func(r io.Reader) (any, error) { b, err := ReadStr(r); return string(b), err }, ""},
		{"str 8", func(w io.Writer) error { return WriteStr(w, []byte("12345678")) }, w().ints(8).raw("12345678"),
			func(r io.Reader) (any, error) { b, err := ReadStr(r); return string(b), err }, "12345678"},
		{"str 9", func(w io.Writer) error { return WriteStr(w, []byte("123456789")) }, w().ints(9).raw("123456789\x00\x00\x00\x00\x00\x00\x00"),
			func(r io.Reader) (any, error) { b, err := ReadStr(r); return string(b), err }, "123456789"},
		{"non-UTF-8 str", func(w io.Writer) error { return WriteStr(w, []byte{0xff, 0, 0xfe}) }, w().str("\xff\x00\xfe"),
			func(r io.Reader) (any, error) { b, err := ReadStr(r); return string(b), err }, "\xff\x00\xfe"},
		{"strs", func(w io.Writer) error { return WriteStrs(w, []string{"/gnu/store/a", "b"}) }, w().strs("/gnu/store/a", "b"),
			func(r io.Reader) (any, error) { return ReadStrs(r) }, []string{"/gnu/store/a", "b"}},
		{"no strs", func(w io.Writer) error { return WriteStrs(w, nil) }, w().ints(0),
			func(r io.Reader) (any, error) { return ReadStrs(r) }, []string{}},
		{"pairs", func(w io.Writer) error { return WritePairs(w, []Pair{{"build-timeout", "5"}, {"x", ""}}) },
			w().ints(2).str("build-timeout", "5", "x", ""),
			func(r io.Reader) (any, error) { return ReadPairs(r) }, []Pair{{"build-timeout", "5"}, {"x", ""}}},
	} {
		var buf bytes.Buffer
		if err := tc.write(&buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), tc.want.Bytes()) {
			t.Errorf("%s: wrote % x, want % x", tc.name, buf.Bytes(), tc.want.Bytes())
		}
		got, err := tc.read(&buf)
		if err != nil || !reflect.DeepEqual(got, tc.value) {
			t.Errorf("%s: read %#v, %v; want %#v", tc.name, got, err, tc.value)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: %d bytes left unread", tc.name, buf.Len())
		}
	}
}

func TestStrPadding(t *testing.T) {
	for n, size := range map[int]int{0: 8, 1: 16, 7: 16, 8: 16, 9: 24, 16: 24, 17: 32} {
		var buf bytes.Buffer
		WriteStr(&buf, bytes.Repeat([]byte{'x'}, n))
		if buf.Len() != size {
			t.Errorf("str of %d bytes takes %d bytes, want %d", n, buf.Len(), size)
		}
		if tail := buf.Bytes()[8+n:]; strings.Trim(string(tail), "\x00") != "" {
			t.Errorf("str of %d bytes: padding % x", n, tail)
		}
	}
}

func TestFrameRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *tx
		read func(io.Reader) error
		want error
	}{
		{"int over 32 bits", w().ints(1 << 32), func(r io.Reader) error { _, err := ReadInt(r); return err }, ErrProtocol},
		{"bool over 32 bits", w().ints(0x0000000100000001), func(r io.Reader) error { _, err := ReadBool(r); return err }, ErrProtocol},
		{"non-zero padding", w().ints(1).ints(0x0100000000000061), func(r io.Reader) error { _, err := ReadStr(r); return err }, ErrProtocol},
		{"string over the limit", w().ints(MaxStringLen + 1), func(r io.Reader) error { _, err := ReadStr(r); return err }, ErrProtocol},
		{"4 GiB string", w().ints(1<<32 - 1), func(r io.Reader) error { _, err := ReadStr(r); return err }, ErrProtocol},
		{"list over the limit", w().ints(MaxListLen + 1), func(r io.Reader) error { _, err := ReadStrs(r); return err }, ErrProtocol},
		{"pairs over the limit", w().ints(1 << 40), func(r io.Reader) error { _, err := ReadPairs(r); return err }, ErrProtocol},
		{"truncated string", w().ints(5).raw("ab"), func(r io.Reader) error { _, err := ReadStr(r); return err }, io.ErrUnexpectedEOF},
		{"truncated padding", w().ints(3).raw("abc\x00"), func(r io.Reader) error { _, err := ReadStr(r); return err }, io.ErrUnexpectedEOF},
		{"truncated list", w().ints(2).str("a"), func(r io.Reader) error { _, err := ReadStrs(r); return err }, io.ErrUnexpectedEOF},
		{"nothing", w(), func(r io.Reader) error { _, err := ReadInt(r); return err }, io.EOF},
		{"half an int", w().raw("abc"), func(r io.Reader) error { _, err := ReadInt(r); return err }, io.ErrUnexpectedEOF},
	} {
		err := tc.read(bytes.NewReader(tc.in.Bytes()))
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// A length is a promise, not data: a daemon announcing 60 MiB and sending 10 bytes must
// not cost us 60 MiB.
func TestReadStrMemoryFollowsData(t *testing.T) {
	in := w().ints(60 << 20).raw("0123456789")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadStr(bytes.NewReader(in.Bytes()))
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v, want unexpected EOF", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 4<<20 {
		t.Errorf("allocated %d bytes for a 10-byte string", n)
	}
}

func TestReadStrIntoSizes(t *testing.T) {
	for _, tc := range []struct{ n, bufCap int }{{0, 0}, {5, 0}, {5, 8}, {100000, 0}, {100000, 128 << 10}, {64 << 10, 64 << 10}} {
		s := strings.Repeat("s", tc.n)
		in := w().str(s).ints(42)
		r := bytes.NewReader(in.Bytes())
		got, err := readStrInto(r, make([]byte, 0, tc.bufCap))
		if err != nil || string(got) != s {
			t.Errorf("%d bytes into a buffer of %d: got %d bytes, %v", tc.n, tc.bufCap, len(got), err)
		}
		if v, err := ReadInt(r); v != 42 || err != nil {
			t.Errorf("%d bytes into a buffer of %d: then %d, %v", tc.n, tc.bufCap, v, err)
		}
	}
}
