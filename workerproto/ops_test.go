package workerproto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"offload/storeio"
)

var bg = context.Background()

func TestQueries(t *testing.T) {
	drv := "/gnu/store/xlyh0000000000000000000000000000-p-par3.drv"
	out := "/gnu/store/hpmxky9f3n6s9kcrbrls33si8dwa2rzv-t-ok"
	hash := "e63963ef" + strings.Repeat("0", 52) + "adec"
	c := dial(t,
		expect(w().ints(opIsValidPath).str(out)),
		send(w().last().ints(1)),
		expect(w().ints(opQueryValidPaths).strs(out, drv)),
		send(w().last().strs(out)),
		expect(w().ints(opQueryPathInfo).str(out)),
		send(w().last().str(drv, hash).strs(drv).ints(1796572419, 160)),
		expect(w().ints(opQueryReferences).str(out)),
		send(w().last().strs()),
		expect(w().ints(opQueryDeriver).str(out)),
		send(w().last().str(drv)),
		expect(w().ints(opQueryPathInfo).str(drv+"x")),
		send(w().fail("path `"+drv+"x' is not valid", 1)),
	)
	if v, err := c.IsValidPath(bg, out); !v || err != nil {
		t.Errorf("IsValidPath = %v, %v", v, err)
	}
	if v, err := c.QueryValidPaths(bg, []string{out, drv}); !reflect.DeepEqual(v, []string{out}) || err != nil {
		t.Errorf("QueryValidPaths = %v, %v", v, err)
	}
	info, err := c.QueryPathInfo(bg, out)
	want := PathInfo{Deriver: drv, NarHash: hash, References: []string{drv}, RegistrationTime: time.Unix(1796572419, 0), NarSize: 160}
	if err != nil || !reflect.DeepEqual(info, want) {
		t.Errorf("QueryPathInfo = %+v, %v; want %+v", info, err, want)
	}
	if refs, err := c.QueryReferences(bg, out); len(refs) != 0 || err != nil {
		t.Errorf("QueryReferences = %v, %v", refs, err)
	}
	if d, err := c.QueryDeriver(bg, out); d != drv || err != nil {
		t.Errorf("QueryDeriver = %v, %v", d, err)
	}
	_, err = c.QueryPathInfo(bg, drv+"x")
	mustDaemonError(t, err, 1, "is not valid")
}

func TestAddTextToStoreAndRoots(t *testing.T) {
	busybox := "/gnu/store/0vqwx856bga9sixsmbj1x4w72br9l969-busybox-static"
	drv := "Derive([],[],[],\"x\",\"b\",[],[])"
	p := TextPath("/gnu/store", "t.drv", []byte(drv), []string{busybox})
	c := dial(t,
		expect(w().ints(opAddTextToStore).str("t.drv", drv).strs(busybox)),
		send(w().last().str(p)),
		expect(w().ints(opAddTempRoot).str(p)),
		send(w().last().ints(1)),
		expect(w().ints(opAddTempRoot).str(p)),
		send(w().last().ints(2)),
	)
	if got, err := c.AddTextToStore(bg, "t.drv", []byte(drv), []string{busybox}); got != p || err != nil {
		t.Errorf("AddTextToStore = %s, %v; want %s", got, err, p)
	}
	if err := c.AddTempRoot(bg, p); err != nil {
		t.Error(err)
	}
	if err := c.AddTempRoot(bg, p); !errors.Is(err, ErrProtocol) {
		t.Errorf("a reply of 2: %v", err)
	}
}

func TestBuildPaths(t *testing.T) {
	d := "/gnu/store/x-t.drv"
	c := dial(t,
		expect(w().ints(opBuildPaths).strs(d, d+"!out").ints(2)),
		send(w().last().ints(1)),
		expect(w().ints(opBuildPaths).strs(d).ints(0)),
		send(w().next(d+" timed out after 5 seconds of silence\n").fail("build of `"+d+"' failed", 101)),
		expect(w().ints(opBuildPaths).strs(d).ints(0)),
		send(w().fail("build of `"+d+"' failed", 100)),
	)
	if err := c.BuildPaths(bg, []string{d, d + "!out"}, BuildCheck); err != nil {
		t.Error(err)
	}
	err := c.BuildPaths(bg, []string{d}, BuildNormal)
	mustDaemonError(t, err, 101, "failed")
	if !strings.Contains(err.Error(), "(status 101)") {
		t.Errorf("message %q hides the status", err)
	}
	mustDaemonError(t, c.BuildPaths(bg, []string{d}, BuildNormal), 100, "failed")
}

func TestSetOptions(t *testing.T) {
	o := Options{KeepGoing: true, Verbosity: 1, UseBuildHook: true, BuildVerbosity: 0, LogType: 2,
		PrintBuildTrace: true, UseSubstitutes: true, Overrides: []Pair{{"build-cores", "2"}}}
	o.SetMaxSilentTime(1500 * time.Millisecond)
	o.SetTimeout(0)
	o.SetMaxSilentTime(5 * time.Second) // replaces, keeps the place
	pairs := w().ints(3).str("build-cores", "2", "build-max-silent-time", "5", "build-timeout", "0")
	c := dial(t,
		expect(w().ints(opSetOptions, 0, 1, 0, 1, 1, 0, 2, 1, 1).raw(pairs.String())),
		send(w().last()),
		expect(w().ints(opSetOptions).ints(0, 0, 0, 0, 0, 0, 0, 0, 0, 1).str("build-timeout", "x")),
		send(w().fail("configuration setting `build-timeout' should have an integer value", 1)),
		hangup(),
	)
	if err := c.SetOptions(bg, o); err != nil {
		t.Fatal(err)
	}
	var bad Options
	bad.Set("build-timeout", "x")
	mustDaemonError(t, c.SetOptions(bg, bad), 1, "integer value")
	if err := c.SetOptions(bg, Options{}); !errors.Is(err, ErrDaemonClosed) {
		t.Errorf("after the daemon closed: %v", err)
	}
}

// Older daemons take max jobs, max silent time and cores as fields, and no overrides
// below minor 12 (§4.10).
func TestSetOptionsOlderDaemons(t *testing.T) {
	var o Options
	o.Verbosity = 3
	o.SetMaxSilentTime(7 * time.Second)
	for _, tc := range []struct {
		daemon uint64
		fields *tx
	}{
		{0x162, w().ints(0, 0, 0, 3, 0, 0, 0, 0, 0, 1).str("build-max-silent-time", "7")},
		{0x160, w().ints(0, 0, 0, 3, 1, 7, 0, 0, 0, 0, 0, 0, 1).str("build-max-silent-time", "7")},
		{0x10a, w().ints(0, 0, 0, 3, 1, 7, 0, 0, 0, 0, 0, 0)},
	} {
		hello := w().ints(0x163)
		if tc.daemon >= 0x10e {
			hello.ints(0, 1)
		}
		c, err := Dial(bg, serve(t,
			expect(w().ints(magic1)), send(w().ints(magic2, tc.daemon)),
			expect(hello), send(w().last()),
			expect(w().ints(opSetOptions).raw(tc.fields.String())), send(w().last()),
		))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetOptions(bg, o); err != nil {
			t.Errorf("daemon %#x: %v", tc.daemon, err)
		}
		if tc.daemon == 0x10a {
			var t5 Options
			t5.SetTimeout(5 * time.Second)
			if err := c.SetOptions(bg, t5); err == nil || !strings.Contains(err.Error(), "build-timeout") {
				t.Errorf("build-timeout to a 0x10a daemon: %v", err)
			}
		}
		c.Close()
	}
}

func TestExportPath(t *testing.T) {
	p := "/gnu/store/24qd8hd2sn67df4gwbpdc33axwnm3r61-vec-plain.txt"
	log := &strings.Builder{}
	c := dial(t,
		expect(w().ints(opExportPath).str(p).ints(1)),
		send(w().next("exporting path `"+p+"'\n").write("nix-archive-1").write("").write(strings.Repeat("z", 70000)).last().ints(1)),
		expect(w().ints(opExportPath).str(p).ints(0)),
		send(w().write("partial").fail("hash of path `"+p+"' has changed from `A' to `B'!", 1)),
		expect(w().ints(opExportPath).str(p).ints(0)),
		send(w().write("part 1").write("part 2").last().ints(1)),
		expect(w().ints(opIsValidPath).str(p)),
		send(w().last().ints(1)),
	)
	c.Log = log
	var out bytes.Buffer
	if err := c.ExportPath(bg, p, true, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "nix-archive-1"+strings.Repeat("z", 70000) {
		t.Errorf("exported %d bytes", out.Len())
	}
	if log.String() != "exporting path `"+p+"'\n" {
		t.Errorf("log = %q", log)
	}
	mustDaemonError(t, c.ExportPath(bg, p, false, io.Discard), 1, "has changed")

	// Our writer fails: the rest of the item is read and dropped, the Conn goes on.
	err := c.ExportPath(bg, p, false, failWriter{})
	if !errors.Is(err, errDisk) {
		t.Errorf("err = %v, want the writer's error", err)
	}
	if v, err := c.IsValidPath(bg, p); !v || err != nil {
		t.Errorf("after a failed writer: %v, %v", v, err)
	}
}

var errDisk = errors.New("disk full")

type failWriter struct{}

func (failWriter) Write(p []byte) (int, error) { return 0, errDisk }

func TestExportItems(t *testing.T) {
	a, b := "/gnu/store/a", "/gnu/store/b"
	c := dial(t,
		expect(w().ints(opExportPath).str(a).ints(1)),
		send(w().write("item a").last().ints(1)),
		expect(w().ints(opExportPath).str(b).ints(1)),
		send(w().write("item b").last().ints(1)),
		expect(w().ints(opExportPath).str(a).ints(0)),
		send(w().write("item a").last().ints(1)),
		expect(w().ints(opExportPath).str(b).ints(0)),
		send(w().write("item").fail("path `/gnu/store/b' is not valid", 1)),
	)
	var out bytes.Buffer
	if err := c.ExportItems(bg, []string{a, b}, true, &out); err != nil {
		t.Fatal(err)
	}
	if want := w().ints(1).raw("item a").ints(1).raw("item b").ints(0); out.String() != want.String() {
		t.Errorf("stream % x, want % x", out.Bytes(), want.Bytes())
	}
	out.Reset()
	mustDaemonError(t, c.ExportItems(bg, []string{a, b}, false, &out), 1, "not valid")
	if want := w().ints(1).raw("item a").ints(1).raw("item"); out.String() != want.String() {
		t.Errorf("after an error: % x, want % x (no end marker)", out.Bytes(), want.Bytes())
	}
}

// pull is a daemon importing bundle through STDERR_READ n, as guix-daemon does, until it
// has exactly len(bundle) bytes; it checks every reply holds 1..n bytes.
func pull(bundle string, n uint64) act {
	return func(c net.Conn) error {
		var got []byte
		for len(got) < len(bundle) {
			if _, err := c.Write(w().ints(stderrRead, n).Bytes()); err != nil {
				return err
			}
			b, err := ReadStr(c)
			if err != nil {
				return err
			}
			if len(b) == 0 || uint64(len(b)) > n {
				return fmt.Errorf("reply of %d bytes to a request for %d", len(b), n)
			}
			got = append(got, b...)
		}
		if string(got) != bundle {
			return errors.New("bundle differs")
		}
		return nil
	}
}

func TestImportPaths(t *testing.T) {
	bundle := w().ints(1).raw(strings.Repeat("i", 100)).ints(0).String()
	c := dial(t,
		expect(w().ints(opImportPaths)),
		send(w().next("importing\n")),
		pull(bundle, 32768),
		send(w().last().strs("/gnu/store/a")),
		expect(w().ints(opImportPaths)),
		pull(bundle, 5),
		send(w().last().strs("/gnu/store/a")),
	)
	paths, err := c.ImportPaths(bg, strings.NewReader(bundle))
	if err != nil || !reflect.DeepEqual(paths, []string{"/gnu/store/a"}) {
		t.Errorf("ImportPaths = %v, %v", paths, err)
	}
	// Short replies: one byte at a time.
	paths, err = c.ImportPaths(bg, iotest.OneByteReader(strings.NewReader(bundle)))
	if err != nil || len(paths) != 1 {
		t.Errorf("ImportPaths one byte at a time = %v, %v", paths, err)
	}
}

// A bundle that ends before its end marker, or fails, is answered with an empty string:
// the daemon then fails the import and the connection stays in sync.
func TestImportPathsBundleEndsEarly(t *testing.T) {
	c := dial(t,
		expect(w().ints(opImportPaths)),
		send(w().ints(stderrRead, 32768)),
		expect(w().str("abc")),
		send(w().ints(stderrRead, 32768)),
		expect(w().str("")),
		send(w().fail("unexpected end-of-file", 1)),
		expect(w().ints(opImportPaths)),
		send(w().ints(stderrRead, 32768)),
		expect(w().str("")),
		send(w().fail("unexpected end-of-file", 1)),
		expect(w().ints(opIsValidPath).str("/gnu/store/a")),
		send(w().last().ints(1)),
	)
	_, err := c.ImportPaths(bg, strings.NewReader("abc"))
	mustDaemonError(t, err, 1, "end-of-file")
	if !strings.Contains(err.Error(), "bundle ended") {
		t.Errorf("err = %v, want it to say the bundle ended early", err)
	}
	_, err = c.ImportPaths(bg, iotest.ErrReader(errDisk))
	if !errors.Is(err, errDisk) {
		t.Errorf("err = %v, want the reader's error", err)
	}
	if v, err := c.IsValidPath(bg, "/gnu/store/a"); !v || err != nil {
		t.Errorf("after a failed import: %v, %v", v, err)
	}
}

// Data or input requests outside an export or import are protocol errors.
func TestUnexpectedTransfer(t *testing.T) {
	for _, reply := range []*tx{w().write("x"), w().ints(stderrRead, 10)} {
		c := dial(t,
			expect(w().ints(opAddTempRoot).str("/gnu/store/a")),
			send(reply),
			closed(),
		)
		if err := c.AddTempRoot(bg, "/gnu/store/a"); !errors.Is(err, ErrProtocol) {
			t.Errorf("err = %v, want a protocol error", err)
		}
	}
}

// exportItem returns the export item of the file at fsPath, as a daemon sends it:
// storeio's one-item bundle without the leading 1 and the final 0.
func exportItem(t *testing.T, fsPath string, info storeio.ItemInfo) []byte {
	t.Helper()
	var b bytes.Buffer
	bw := storeio.NewBundleWriter(&b, nil)
	if err := bw.Add(fsPath, info); err != nil {
		t.Fatal(err)
	}
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()[8 : b.Len()-8]
}

// What the hook does with outputs: ExportItems piped into storeio.ImportBundle, which
// restores all or nothing.
func TestExportItemsIntoImportBundle(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a"), []byte("A\n"), 0o644)
	os.WriteFile(filepath.Join(src, "b"), []byte(strings.Repeat("B", 100000)), 0o644)
	pa := TextPath("/gnu/store", "a", []byte("A\n"), nil)
	pb := TextPath("/gnu/store", "b", []byte("B"), []string{pa})
	ia := exportItem(t, filepath.Join(src, "a"), storeio.ItemInfo{Path: pa})
	ib := exportItem(t, filepath.Join(src, "b"), storeio.ItemInfo{Path: pb, References: []string{pa}})
	c := dial(t,
		expect(w().ints(opExportPath).str(pa).ints(0)),
		send(w().write(string(ia[:5])).write(string(ia[5:])).last().ints(1)),
		expect(w().ints(opExportPath).str(pb).ints(0)),
		send(w().write(string(ib[:65536])).next("log\n").write(string(ib[65536:])).last().ints(1)),
		expect(w().ints(opExportPath).str(pa).ints(0)),
		send(w().write(string(ia)).last().ints(1)),
		expect(w().ints(opExportPath).str(pb).ints(0)),
		send(w().write(string(ib[:1000])).fail("hash of path `"+pb+"' has changed", 1)),
	)
	restore := func() (string, error) {
		dst := t.TempDir()
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			_, err := storeio.ImportBundle(pr, storeio.ImportOptions{StoreDir: "/gnu/store", RealDir: dst})
			pr.CloseWithError(err)
			done <- err
		}()
		pw.CloseWithError(c.ExportItems(bg, []string{pa, pb}, false, pw))
		return dst, <-done
	}
	dst, err := restore()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, filepath.Base(pb))); err != nil || len(b) != 100000 {
		t.Errorf("restored b: %d bytes, %v", len(b), err)
	}
	dst, err = restore()
	mustDaemonError(t, err, 1, "has changed")
	if left, _ := os.ReadDir(dst); len(left) != 0 {
		t.Errorf("a failed export left %v in the store", left)
	}
}

// AddToStore writes name, the fixed and recursive flags, "sha256", then the nar inline
// (not as a string), and reads the path.
func TestAddToStore(t *testing.T) {
	nar := "nix-archive-1 stands for a nar here"
	c := dial(t,
		expect(w().ints(opAddToStore).str("src").ints(1, 1).str("sha256").raw(nar)),
		send(w().last().str("/gnu/store/x-src")),
	)
	p, err := c.AddToStore(bg, "src", strings.NewReader(nar))
	if err != nil || p != "/gnu/store/x-src" {
		t.Errorf("AddToStore = %q, %v", p, err)
	}
}

// The source path is the daemon's for recursive sha256 (§4.5b): a Go source tree added
// to a real Guix store with add-to-store, its path and nar hash as that store's
// database recorded them.
func TestSourcePath(t *testing.T) {
	const hash = "e5cf6206653cb692c5d9c584d1e98f0c23ea777821fb28b3cf230c5cf122a2ba"
	if got, want := SourcePath("/gnu/store", "go-src", hash), "/gnu/store/rbzylwwylrczlq8s8h1nhwlf0987fjfx-go-src"; got != want {
		t.Errorf("SourcePath = %q, want %q", got, want)
	}
}
