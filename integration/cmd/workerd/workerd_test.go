package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"offload/integration/drv"
	"offload/storeio"
)

// A minimal raw client, written from the spec for these tests only.

type client struct {
	t *testing.T
	c *net.UnixConn
	r *bufio.Reader
	w *bufio.Writer
}

func (c *client) int(v uint64) *client {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	c.w.Write(b[:])
	return c
}

func (c *client) str(s string) *client {
	c.int(uint64(len(s)))
	c.w.WriteString(s)
	c.w.Write(make([]byte, pad(uint64(len(s)))))
	return c
}

func (c *client) strs(ss ...string) *client {
	c.int(uint64(len(ss)))
	for _, s := range ss {
		c.str(s)
	}
	return c
}

func (c *client) send() {
	c.t.Helper()
	if err := c.w.Flush(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) readInt() uint64 {
	c.t.Helper()
	var b [8]byte
	if _, err := io.ReadFull(c.r, b[:]); err != nil {
		c.t.Fatalf("read int: %v", err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func (c *client) readStr() string {
	c.t.Helper()
	n := c.readInt()
	b := make([]byte, n+pad(n))
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.t.Fatalf("read string: %v", err)
	}
	return string(b[:n])
}

func (c *client) readStrs() []string {
	c.t.Helper()
	n := c.readInt()
	var out []string
	for range n {
		out = append(out, c.readStr())
	}
	return out
}

// reply is what the STDERR loop of one request brought.
type reply struct {
	next   []string // STDERR_NEXT texts
	writes [][]byte // STDERR_WRITE chunks
	reads  int      // STDERR_READ requests answered
	err    string   // STDERR_ERROR message; "" after STDERR_LAST
	status uint64
}

func (r *reply) log() string { return strings.Join(r.next, "") }

// loop reads the STDERR loop; feed answers STDERR_READ (nil: none expected).
func (c *client) loop(feed func(n uint64) []byte) reply {
	c.t.Helper()
	var r reply
	for {
		switch code := c.readInt(); code {
		case stderrNext:
			r.next = append(r.next, c.readStr())
		case stderrWrite:
			r.writes = append(r.writes, []byte(c.readStr()))
		case stderrRead:
			n := c.readInt()
			if feed == nil {
				c.t.Fatal("unexpected STDERR_READ")
			}
			r.reads++
			c.str(string(feed(n))).send()
		case stderrLast:
			return r
		case stderrError:
			r.err = c.readStr()
			r.status = c.readInt()
			return r
		default:
			c.t.Fatalf("unknown STDERR code %#x", code)
		}
	}
}

// expectEOF checks that the daemon closed the connection with nothing more to say.
func (c *client) expectEOF() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := c.r.ReadByte()
	if err == nil {
		c.t.Fatalf("expected the connection closed, got byte %#x", b)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("expected EOF, got %v", err)
	}
}

// fixture is a stand-in daemon over a fresh store.
type fixture struct {
	t      *testing.T
	store  drv.Store
	conf   string
	state  string
	socket string
	key    *storeio.SecretKey
	env    map[string]string
	stop   func()
}

func newFixture(t *testing.T, env map[string]string) *fixture {
	dir := t.TempDir()
	f := &fixture{t: t, conf: filepath.Join(dir, "conf"), state: filepath.Join(dir, "state")}
	f.store = drv.Store{Logical: filepath.Join(dir, "gnu", "store"), Physical: filepath.Join(dir, "m", "store"), DB: filepath.Join(dir, "m", "db")}
	for _, d := range []string{f.store.Physical, f.store.DB, f.conf, f.state} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if f.key, err = storeio.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.conf, "signing-key.sec"), f.key.MarshalText(), 0o600); err != nil {
		t.Fatal(err)
	}
	f.authorize() // none yet
	f.env = map[string]string{"NIX_STORE_DIR": f.store.Logical, "FAKEGUIX_STORE": f.store.Physical, "FAKEGUIX_DB": f.store.DB,
		"GUIX_CONFIGURATION_DIRECTORY": f.conf, "GUIX_STATE_DIRECTORY": f.state, "WORKERD_HOSTILE_FILE": filepath.Join(dir, "hostile")}
	for k, v := range env {
		f.env[k] = v
	}
	d := newDaemon(func(k string) string { return f.env[k] })
	f.socket = d.defaultSocket()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.serve(ctx, f.socket) }()
	f.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(f.stop)
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", f.socket); err == nil {
			c.Close()
			break
		}
		if i > 3000 {
			t.Fatal("the daemon does not listen")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

func (f *fixture) authorize(keys ...*storeio.PublicKey) {
	acl, _ := storeio.ParseACL([]byte("(acl)"))
	for _, k := range keys {
		acl.Add(k)
	}
	if err := os.WriteFile(filepath.Join(f.conf, "acl"), acl.MarshalText(), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) hostile(mode string) {
	if err := os.WriteFile(f.env["WORKERD_HOSTILE_FILE"], []byte(mode), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) dial() *client {
	f.t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: f.socket, Net: "unix"})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return &client{t: f.t, c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
}

// connect dials and does the handshake as a 0x163 client.
func (f *fixture) connect() *client {
	f.t.Helper()
	c := f.dial()
	c.int(workerMagic1).send()
	if m, v := c.readInt(), c.readInt(); m != workerMagic2 || v != protocolVersion {
		f.t.Fatalf("handshake: magic %#x version %#x", m, v)
	}
	c.int(protocolVersion).int(0).int(1).send()
	if r := c.loop(nil); r.err != "" {
		f.t.Fatalf("handshake: %s", r.err)
	}
	return c
}

// setOptions sends SetOptions with 0x163's nine fields and the overrides.
func (c *client) setOptions(verbosity, buildVerbosity uint64, trace bool, overrides ...string) reply {
	return c.options(options{verbosity: verbosity, buildVerbosity: buildVerbosity, trace: trace}, overrides...)
}

// options are the SetOptions fields the tests set.
type options struct {
	keepGoing                 bool
	verbosity, buildVerbosity uint64
	trace, useSubstitutes     bool
}

// options sends SetOptions with 0x163's nine fields (keepFailed, keepGoing,
// tryFallback, verbosity, useBuildHook, buildVerbosity, logType, printBuildTrace,
// useSubstitutes) and the overrides.
func (c *client) options(o options, overrides ...string) reply {
	flag := func(b bool) uint64 {
		if b {
			return 1
		}
		return 0
	}
	c.int(19).int(0).int(flag(o.keepGoing)).int(0).int(o.verbosity).int(1).int(o.buildVerbosity).int(0).int(flag(o.trace)).int(flag(o.useSubstitutes))
	c.int(uint64(len(overrides) / 2))
	for _, s := range overrides {
		c.str(s)
	}
	c.send()
	return c.loop(nil)
}

func (f *fixture) item(name, content string) string {
	f.t.Helper()
	p, err := f.store.AddItem(name, map[string]string{"": content})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func TestHandshakeAndWrongMagic(t *testing.T) {
	f := newFixture(t, nil)
	c := f.connect()
	c.int(1).str(f.item("a", "x")).send()
	if r := c.loop(nil); r.err != "" || c.readInt() != 1 {
		t.Fatalf("IsValidPath after the handshake: %+v", r)
	}
	bad := f.dial()
	bad.int(0x12345678).send()
	bad.expectEOF()
	// A client announcing 0x10a (no affinity, no reserveSpace) is served too.
	old := f.dial()
	old.int(workerMagic1).send()
	old.readInt()
	old.readInt()
	old.int(0x10a).send()
	if r := old.loop(nil); r.err != "" {
		t.Fatal(r.err)
	}
}

func TestErrorsKeepOrClose(t *testing.T) {
	f := newFixture(t, nil)
	c := f.connect()
	// IsValidPath checks its path during work: the connection survives.
	c.int(1).str("/tmp/foo").send()
	if r := c.loop(nil); r.err != "path `/tmp/foo' is not in the store" || r.status != 1 {
		t.Fatalf("IsValidPath /tmp/foo: %+v", r)
	}
	// A well-prefixed path that is not a valid item answers 0.
	c.int(1).str(f.store.Logical + "/.links").send()
	if r := c.loop(nil); r.err != "" || c.readInt() != 0 {
		t.Fatalf("IsValidPath .links: %+v", r)
	}
	// An invalid path in QueryPathInfo is an error during work: kept.
	missing := f.store.Logical + "/00000000000000000000000000000000-none"
	c.int(26).str(missing).send()
	if r := c.loop(nil); r.err != "path `"+missing+"' is not valid" {
		t.Fatalf("QueryPathInfo invalid: %+v", r)
	}
	// A non-store path read by readStorePath: error, then the daemon closes.
	c.int(26).str("/tmp/foo").send()
	if r := c.loop(nil); r.err != "path `/tmp/foo' is not in the store" {
		t.Fatalf("QueryPathInfo /tmp/foo: %+v", r)
	}
	c.expectEOF()

	for _, tc := range []struct {
		name string
		req  func(c *client)
		want string
	}{
		{"unknown op", func(c *client) { c.int(40) }, "invalid operation 40"},
		{"bad override", func(c *client) {
			c.int(19).int(0).int(0).int(0).int(0).int(1).int(0).int(0).int(0).int(0).int(1).str("build-max-silent-time").str("x")
		}, "configuration setting `build-max-silent-time' should have an integer value"},
		{"bad boolean", func(c *client) {
			c.int(19).int(0).int(0).int(0).int(0).int(1).int(0).int(0).int(0).int(0).int(1).str("multiplexed-build-output").str("1")
		}, "configuration option `multiplexed-build-output' should be either `true' or `false', not `1'"},
		{"64-bit int", func(c *client) { c.int(1 << 40) }, "implementation cannot deal with > 32-bit integers"},
		{"non-store in QueryValidPaths", func(c *client) { c.int(31).strs("/tmp/x") }, "path `/tmp/x' is not in the store"},
	} {
		c := f.connect()
		tc.req(c)
		c.send()
		if r := c.loop(nil); r.err != tc.want || r.status != 1 {
			t.Errorf("%s: got %+v, want error %q", tc.name, r, tc.want)
			continue
		}
		c.expectEOF()
	}
}

func TestRepairFromUntrustedCloses(t *testing.T) {
	f := newFixture(t, map[string]string{"WORKERD_ROOT_UNTRUSTED": "1"})
	c := f.connect()
	c.int(9).strs().int(1).send()
	if r := c.loop(nil); r.err != "repairing is a privileged operation" {
		t.Fatalf("repair: %+v", r)
	}
	c.expectEOF()
}

func TestQueries(t *testing.T) {
	f := newFixture(t, nil)
	a := f.item("a", "aaa")
	b := f.item("b", "refers to "+a)
	c := f.connect()
	missing := f.store.Logical + "/00000000000000000000000000000000-none"
	c.int(31).strs(b, missing, a).send()
	if r := c.loop(nil); r.err != "" {
		t.Fatal(r.err)
	}
	if got := c.readStrs(); !slices.Equal(got, []string{a, b}) && !slices.Equal(got, []string{b, a}) || !slices.IsSorted(got) {
		t.Errorf("QueryValidPaths: %q", got)
	}
	c.int(26).str(b).send()
	if r := c.loop(nil); r.err != "" {
		t.Fatal(r.err)
	}
	deriver, hash, refs, regTime, size := c.readStr(), c.readStr(), c.readStrs(), c.readInt(), c.readInt()
	var nar bytes.Buffer
	real, _ := f.store.Real(b)
	storeio.Dump(&nar, real)
	sum := sha256.Sum256(nar.Bytes())
	if deriver != "" || hash != hex.EncodeToString(sum[:]) || !slices.Equal(refs, []string{a}) || regTime == 0 || size != uint64(nar.Len()) {
		t.Errorf("QueryPathInfo: %q %q %q %d %d", deriver, hash, refs, regTime, size)
	}
	c.int(5).str(b).send()
	if r := c.loop(nil); r.err != "" || !slices.Equal(c.readStrs(), []string{a}) {
		t.Errorf("QueryReferences: %+v", r)
	}
	c.int(18).str(b).send()
	if r := c.loop(nil); r.err != "" || c.readStr() != "" {
		t.Errorf("QueryDeriver: %+v", r)
	}
}

// AddTextToStore computes the path as §4.4 says, whatever order the references come in,
// checks references and a .drv's outputs, registers the item and temp-roots it.
func TestAddTextToStore(t *testing.T) {
	f := newFixture(t, nil)
	// The same derivation made in a second store with the same logical dir gives the
	// path and text to send.
	other := drv.Store{Logical: f.store.Logical, Physical: filepath.Join(t.TempDir(), "store"), DB: filepath.Join(t.TempDir(), "db")}
	src, err := other.AddItem("src", map[string]string{"": "source"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := other.Make(drv.Spec{Name: "t-text", Builder: "/bin/sh", Args: []string{"-c", "echo hi > $out"}, InputSrcs: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	real, _ := other.Real(d.Path)
	text, _ := os.ReadFile(real)
	c := f.connect()
	c.int(8).str("t-text.drv").str(string(text)).strs(src).send()
	if r := c.loop(nil); r.err != "path ‘"+src+"’ is not valid" || r.status != 1 {
		t.Fatalf("reference not valid: %+v", r)
	}
	if got := f.item("src", "source"); got != src {
		t.Fatalf("test setup: %s != %s", got, src)
	}
	bad := strings.Replace(string(text), d.Outputs[0].Path, f.store.Logical+"/00000000000000000000000000000000-t-text", -1)
	c.int(8).str("t-text.drv").str(bad).strs(src).send()
	if r := c.loop(nil); !strings.HasPrefix(r.err, "derivation `") || !strings.Contains(r.err, "has incorrect output") {
		t.Fatalf("wrong output: %+v", r)
	}
	c.int(8).str("t-text.drv").str(string(text)).strs(src, src).send()
	if r := c.loop(nil); r.err != "" {
		t.Fatal(r.err)
	}
	if p := c.readStr(); p != d.Path {
		t.Fatalf("path %s, want %s", p, d.Path)
	}
	if info, err := f.store.Info(d.Path); err != nil || !slices.Equal(info.References, []string{src}) {
		t.Fatalf("registered as %+v, %v", info, err)
	}
	if roots := f.tempRoots(); !slices.Contains(roots, d.Path) {
		t.Errorf("temp roots %q lack %s", roots, d.Path)
	}
}

// tempRoots returns every root of every temproots file.
func (f *fixture) tempRoots() []string {
	files, _ := filepath.Glob(filepath.Join(f.state, "temproots", "*"))
	var roots []string
	for _, file := range files {
		b, _ := os.ReadFile(file)
		for _, r := range strings.Split(string(b), "\x00") {
			if r != "" {
				roots = append(roots, r)
			}
		}
	}
	return roots
}

func TestTempRootsRemovedAtClose(t *testing.T) {
	f := newFixture(t, nil)
	p := f.item("rooted", "x")
	c := f.connect()
	c.int(11).str(p).send()
	if r := c.loop(nil); r.err != "" || c.readInt() != 1 {
		t.Fatalf("AddTempRoot: %+v", r)
	}
	files, _ := filepath.Glob(filepath.Join(f.state, "temproots", strconv.Itoa(os.Getpid())+"-*"))
	if len(files) != 1 || !slices.Equal(f.tempRoots(), []string{p}) {
		t.Fatalf("temproots files %q roots %q", files, f.tempRoots())
	}
	c.c.Close()
	for i := 0; ; i++ {
		if _, err := os.Stat(files[0]); os.IsNotExist(err) {
			break
		}
		if i > 3000 {
			t.Fatal("temp roots file still there after the connection closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// export runs ExportPath and returns the reply and the bytes of the item.
func (c *client) export(p string, sign bool) (reply, []byte) {
	s := uint64(0)
	if sign {
		s = 1
	}
	c.int(16).str(p).int(s).send()
	r := c.loop(nil)
	return r, bytes.Join(r.writes, nil)
}

func TestExportFraming(t *testing.T) {
	f := newFixture(t, nil)
	a := f.item("a", "aaa")
	big := f.item("big", strings.Repeat("0123456789abcdef", 10000)+a) // > 64 KiB, refers to a
	c := f.connect()
	for _, sign := range []bool{false, true} {
		r, item := c.export(big, sign)
		if r.err != "" {
			t.Fatal(r.err)
		}
		if n := c.readInt(); n != 1 {
			t.Fatalf("reply %d", n)
		}
		if len(r.writes) < 3 {
			t.Errorf("%d chunks for %d bytes", len(r.writes), len(item))
		}
		for _, w := range r.writes {
			if len(w) > 65536 || len(w) == 0 {
				t.Errorf("chunk of %d bytes", len(w))
			}
		}
		if r.log() != "exporting path `"+big+"'\n" {
			t.Errorf("messages %q", r.next)
		}
		// No leading 1, no trailing 0: a bundle is 1, the item, 0.
		var bundle bytes.Buffer
		binary.Write(&bundle, binary.LittleEndian, uint64(1))
		bundle.Write(item)
		binary.Write(&bundle, binary.LittleEndian, uint64(0))
		items, err := storeio.ListBundle(&bundle)
		if err != nil || len(items) != 1 || items[0].Path != big || !slices.Equal(items[0].References, []string{a}) {
			t.Fatalf("sign=%v: %+v %v", sign, items, err)
		}
		if !sign && items[0].Signature != nil {
			t.Error("unsigned export carries a signature")
		}
		if sign {
			acl, _ := storeio.ParseACL([]byte("(acl)"))
			acl.Add(f.key.Public())
			if _, err := storeio.VerifySignature(items[0].Signature, items[0].Hash, acl); err != nil {
				t.Errorf("signature: %v", err)
			}
		}
	}
	// After SetOptions with verbosity 0 the info message stops.
	c.setOptions(0, 0, false)
	if r, _ := c.export(a, false); r.err != "" || len(r.next) != 0 {
		t.Errorf("verbosity 0: %+v", r)
	}
	c.readInt()
	missing := f.store.Logical + "/00000000000000000000000000000000-none"
	if r, _ := c.export(missing, true); r.err != "path `"+missing+"' is not valid" {
		t.Errorf("invalid: %+v", r)
	}
}

// bundleOf exports paths from a second store (same logical dir) signed by key.
func bundleOf(t *testing.T, key *storeio.SecretKey, s drv.Store, paths ...string) []byte {
	var b bytes.Buffer
	bw := storeio.NewBundleWriter(&b, key)
	for _, p := range paths {
		info, err := s.Info(p)
		if err != nil {
			t.Fatal(err)
		}
		real, _ := s.Real(p)
		if err := bw.Add(real, storeio.ItemInfo{Path: p, References: info.References, Deriver: info.Deriver}); err != nil {
			t.Fatal(err)
		}
	}
	bw.Close()
	return b.Bytes()
}

// feeder answers STDERR_READ from data, at most size bytes at a time.
func feeder(data []byte, size int) func(n uint64) []byte {
	return func(n uint64) []byte {
		k := min(len(data), size, int(n))
		out := data[:k]
		data = data[k:]
		return out
	}
}

func TestImport(t *testing.T) {
	f := newFixture(t, nil)
	other := drv.Store{Logical: f.store.Logical, Physical: filepath.Join(t.TempDir(), "store"), DB: filepath.Join(t.TempDir(), "db")}
	a, _ := other.AddItem("a", map[string]string{"": "aaa"})
	b, _ := other.AddItem("b", map[string]string{"x": "uses " + a, "sub/y*": "#!/bin/sh\n"})
	theirs, _ := storeio.GenerateKey()
	f.authorize(theirs.Public())
	c := f.connect()

	// Unsigned: refused, nothing registered.
	var unsigned bytes.Buffer
	bw := storeio.NewBundleWriter(&unsigned, nil)
	real, _ := other.Real(a)
	bw.Add(real, storeio.ItemInfo{Path: a})
	bw.Close()
	c.int(27).send()
	if r := c.loop(feeder(unsigned.Bytes(), 32768)); r.err != "imported archive of `"+a+"' lacks a signature" || r.status != 1 {
		t.Fatalf("unsigned: %+v", r)
	}
	if f.store.Valid(a) {
		t.Fatal("unsigned item registered")
	}
	// Signed by a key the ACL lacks.
	stranger, _ := storeio.GenerateKey()
	c.int(27).send()
	if r := c.loop(feeder(bundleOf(t, stranger, other, a), 32768)); r.err != "unauthorized public key: "+stranger.Public().String() {
		t.Fatalf("unauthorized: %+v", r)
	}
	// Authorized, fed 7 bytes at a time (short replies are fine).
	c.int(27).send()
	r := c.loop(feeder(bundleOf(t, theirs, other, a, b), 7))
	if r.err != "" {
		t.Fatal(r.err)
	}
	if got := c.readStrs(); !slices.Equal(got, []string{a, b}) {
		t.Fatalf("imported %q", got)
	}
	if r.reads < 10 {
		t.Errorf("only %d reads for 7-byte replies", r.reads)
	}
	if info, err := f.store.Info(b); err != nil || !slices.Equal(info.References, []string{a}) {
		t.Fatalf("b: %+v %v", info, err)
	}
	realB, _ := f.store.Real(b)
	if got, _ := os.ReadFile(filepath.Join(realB, "x")); string(got) != "uses "+a {
		t.Errorf("b/x = %q", got)
	}
	// Already valid: listed again. Followed by an unsigned item: the error names it and
	// the items before it stay.
	c2, _ := other.AddItem("c", map[string]string{"": "ccc"})
	d, _ := other.AddItem("d", map[string]string{"": "ddd"})
	var mixed bytes.Buffer
	bw = storeio.NewBundleWriter(&mixed, nil)
	for _, p := range []string{a, c2, d} {
		real, _ := other.Real(p)
		info := storeio.ItemInfo{Path: p}
		if p != d {
			var one bytes.Buffer
			one.Write(bundleOf(t, theirs, other, p))
			items, _ := storeio.ListBundle(&one)
			info.Signature = items[0].Signature
		}
		bw.Add(real, info)
	}
	bw.Close()
	c.int(27).send()
	if r := c.loop(feeder(mixed.Bytes(), 32768)); r.err != "imported archive of `"+d+"' lacks a signature" {
		t.Fatalf("mixed: %+v", r)
	}
	if !f.store.Valid(c2) || f.store.Valid(d) {
		t.Errorf("after a failing stream: c valid %v, d valid %v", f.store.Valid(c2), f.store.Valid(d))
	}
	// The connection survives all that.
	c.int(27).send()
	if r := c.loop(feeder(bundleOf(t, theirs, other, a), 32768)); r.err != "" || !slices.Equal(c.readStrs(), []string{a}) {
		t.Fatalf("already valid: %+v", r)
	}
	// A reply longer than asked closes the connection.
	c.int(27).send()
	if c.readInt() != stderrRead {
		t.Fatal("no STDERR_READ")
	}
	n := c.readInt()
	c.str(strings.Repeat("x", int(n)+1)).send()
	if r := c.loop(nil); r.err != "string is too long" {
		t.Fatalf("long reply: %+v", r)
	}
	c.expectEOF()

	// Data sent ahead of the requests: the real daemon finds the client not quiet when
	// it goes back to work after the first piece, and fails.
	c = f.connect()
	c.int(27).send()
	if c.readInt() != stderrRead {
		t.Fatal("no STDERR_READ")
	}
	n = c.readInt()
	// One write, so that the second piece is there when the first is read.
	var ahead bytes.Buffer
	for _, piece := range []string{strings.Repeat("x", int(n)), "y"} {
		binary.Write(&ahead, binary.LittleEndian, uint64(len(piece)))
		ahead.WriteString(piece)
		ahead.Write(make([]byte, (8-len(piece)%8)%8))
	}
	if _, err := c.c.Write(ahead.Bytes()); err != nil {
		t.Fatal(err)
	}
	if r := c.loop(nil); r.err != "EOF expected (protocol error?)" {
		t.Fatalf("data sent ahead: %+v", r)
	}
	c.expectEOF()
}

// writeDrv makes a derivation in f's store whose builder runs script.
func (f *fixture) writeDrv(name, script string) *drv.Derivation {
	f.t.Helper()
	d, err := f.store.Make(drv.Spec{Name: name, Builder: "/bin/sh", Args: []string{"-c", script}, Env: map[string]string{"PATH": "/usr/bin:/bin"}})
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func TestBuild(t *testing.T) {
	f := newFixture(t, nil)
	ok := f.writeDrv("t-ok", `echo "log line one"; echo done > $out`)
	fails := f.writeDrv("t-fail", `echo "about to fail"; exit 3`)
	silent := f.writeDrv("t-silent", `echo start; exec sleep 300`)
	c := f.connect()
	c.setOptions(0, 0, true, "build-max-silent-time", "1")

	c.int(9).strs(ok.Path).int(0).send()
	r := c.loop(nil)
	if r.err != "" || c.readInt() != 1 {
		t.Fatalf("build: %+v", r)
	}
	log := r.log()
	for _, want := range []string{"@ build-started " + ok.Path + " - x86_64-linux ", "log line one\n", "@ build-succeeded " + ok.Path + " -\n"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if !f.store.Valid(ok.Outputs[0].Path) {
		t.Error("output not valid")
	}
	// Built already: nothing to say.
	c.int(9).strs(ok.Path).int(0).send()
	if r := c.loop(nil); r.err != "" || len(r.next) != 0 || c.readInt() != 1 {
		t.Errorf("rebuild: %+v", r)
	}

	c.int(9).strs(fails.Path).int(0).send()
	r = c.loop(nil)
	if r.err != "build of `"+fails.Path+"' failed" || r.status != 100 {
		t.Errorf("failing build: %q %d", r.err, r.status)
	}
	if !strings.Contains(r.log(), "about to fail\n") || !strings.Contains(r.log(), "@ build-failed "+fails.Path+" - 1 ") {
		t.Errorf("failing build log:\n%s", r.log())
	}

	c.int(9).strs(silent.Path).int(0).send()
	r = c.loop(nil)
	if r.err != "build of `"+silent.Path+"' failed" || r.status != 101 {
		t.Errorf("silent build: %q %d", r.err, r.status)
	}
	if !strings.Contains(r.log(), "@ build-failed "+silent.Path+" - timeout\n") {
		t.Errorf("silent build log:\n%s", r.log())
	}

	// The quirk: an invalid plain item without a substitute is no failure.
	missing := f.store.Logical + "/00000000000000000000000000000000-none"
	c.int(9).strs(missing).int(0).send()
	if r := c.loop(nil); r.err != "" || c.readInt() != 1 {
		t.Errorf("invalid plain item: %+v", r)
	}

	// buildVerbosity above verbosity: the builder's output is not forwarded.
	quiet := f.writeDrv("t-quiet", `echo "not forwarded"; echo > $out`)
	c.setOptions(0, 1, false)
	c.int(9).strs(quiet.Path).int(0).send()
	if r := c.loop(nil); r.err != "" || strings.Contains(r.log(), "not forwarded") {
		t.Errorf("quiet build: %+v", r)
	}
	c.readInt()
}

// Closing the connection interrupts the build: its builder's process group is killed.
// Bytes sent while it works break the protocol.
func TestBuildInterrupted(t *testing.T) {
	f := newFixture(t, nil)
	pidFile := filepath.Join(t.TempDir(), "pid")
	for i, how := range []string{"close", "extra byte"} {
		d := f.writeDrv("t-long-"+strconv.Itoa(i), `sleep 300 & echo $! > `+pidFile+`; echo started; wait`)
		os.Remove(pidFile)
		c := f.connect()
		c.setOptions(0, 0, false)
		c.int(9).strs(d.Path).int(0).send()
		if c.readInt() != stderrNext || c.readStr() != "started\n" {
			t.Fatal("no log from the builder")
		}
		b, _ := os.ReadFile(pidFile)
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("pid file: %q", b)
		}
		if how == "close" {
			c.c.Close()
		} else {
			c.int(1).send()
			if r := c.loop(nil); r.err != "EOF expected (protocol error?)" {
				t.Errorf("extra byte: %+v", r)
			}
			c.expectEOF()
		}
		for i := 0; syscall.Kill(pid, 0) == nil && !zombie(pid); i++ {
			if i > 3000 {
				t.Fatalf("%s: the builder's child %d still runs", how, pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(rest, "Z")
}

func TestHostile(t *testing.T) {
	f := newFixture(t, nil)
	p := f.item("big", strings.Repeat("0123456789abcdef", 10000))

	f.hostile("no-magic")
	c := f.dial()
	c.expectEOF()

	f.hostile("hang")
	c = f.dial()
	c.int(workerMagic1).send()
	c.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.r.ReadByte(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("hang: %v", err)
	}

	f.hostile("")
	c = f.connect()
	f.hostile("garbage")
	c.int(1).str(p).send()
	if code := c.readInt(); code == stderrLast || code == stderrNext || code == stderrError {
		t.Errorf("garbage: a real code %#x", code)
	}
	c.expectEOF()

	f.hostile("close-mid-export")
	c = f.connect()
	c.int(16).str(p).int(1).send()
	var got int
	for {
		code := c.readInt()
		if code == stderrNext {
			c.readStr()
			continue
		}
		if code != stderrWrite {
			t.Fatalf("close-mid-export: code %#x", code)
		}
		got += len(c.readStr())
		if _, err := c.r.Peek(1); err != nil {
			break
		}
	}
	if got == 0 || got >= 160000 {
		t.Errorf("close-mid-export sent %d bytes", got)
	}
	c.expectEOF()

	f.hostile("bad-export-hash")
	c = f.connect()
	r, item := c.export(p, true)
	if !strings.HasPrefix(r.err, "hash of path `"+p+"' has changed from `") || len(item) == 0 {
		t.Errorf("bad-export-hash: %+v", r.err)
	}
	var nar bytes.Buffer
	real, _ := f.store.Real(p)
	storeio.Dump(&nar, real)
	if len(item) != nar.Len() || bytes.Equal(item, nar.Bytes()) {
		t.Errorf("bad-export-hash sent %d bytes, the nar has %d, changed: %v", len(item), nar.Len(), !bytes.Equal(item, nar.Bytes()))
	}
	f.hostile("")
	c.int(1).str(p).send() // the connection survives the error
	if r := c.loop(nil); r.err != "" || c.readInt() != 1 {
		t.Errorf("after bad-export-hash: %+v", r)
	}
}
