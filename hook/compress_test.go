package hook

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"offload/sshexec/sshtest"
	"offload/storeio"
)

func TestParseCompressionMode(t *testing.T) {
	for in, want := range map[string]string{"": "auto", "auto": "auto", "ZSTD": "zstd", " gzip ": "gzip", "none": "none", "ssh": "ssh"} {
		got, err := ParseCompressionMode(in)
		if err != nil || got != want {
			t.Errorf("ParseCompressionMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"xz", "zstd,gzip", "yes"} {
		if got, err := ParseCompressionMode(bad); err == nil || got != CompressionAuto {
			t.Errorf("ParseCompressionMode(%q) = %q, %v; want auto and an error", bad, got, err)
		}
	}
}

// TestChooseCompression: the one session cannot switch to ssh's compression once the
// machine said it has neither zstd nor gzip: it goes uncompressed and says so, unless
// the mode asked for ssh's compression from the start.
func TestChooseCompression(t *testing.T) {
	none := map[string]bool{}
	for _, c := range []struct {
		mode     string
		has      map[string]bool
		want     Compression
		wantNote string
	}{
		{"auto", map[string]bool{"zstd": true}, CompressZstd, ""},
		{"auto", map[string]bool{"gzip": true}, CompressGzip, ""},
		{"auto", none, CompressNone, "it has neither zstd nor gzip; transfers are uncompressed (install zstd there)"},
		{"zstd", none, CompressNone, "OFFLOAD_COMPRESSION=zstd but it has neither zstd nor gzip; transfers are uncompressed (install zstd there)"},
		{"zstd", map[string]bool{"gzip": true}, CompressGzip, "OFFLOAD_COMPRESSION=zstd but the machine has no zstd; using gzip"},
		{"ssh", none, CompressSSH, ""},
		{"ssh", map[string]bool{"zstd": true}, CompressSSH, ""},
		{"none", none, CompressNone, ""},
		{"auto", map[string]bool{"zstd": true, "gzip": true}, CompressZstd, ""},
		{"gzip", map[string]bool{"zstd": true, "gzip": true}, CompressGzip, ""},
		{"none", map[string]bool{"zstd": true}, CompressNone, ""},
	} {
		got, note := ChooseCompression(c.mode, c.has)
		if got != c.want || note != c.wantNote {
			t.Errorf("ChooseCompression(%q, %v) = %q, %q; want %q, %q", c.mode, c.has, got, note, c.want, c.wantNote)
		}
	}
}

func TestParseMissing(t *testing.T) {
	paths, has := parseMissing("offload-has zstd\noffload-has gzip\n/gnu/store/aaa-x\n/gnu/store/bbb-y\n")
	if strings.Join(paths, " ") != "/gnu/store/aaa-x /gnu/store/bbb-y" || !has["zstd"] || !has["gzip"] || len(has) != 2 {
		t.Errorf("got %q, %v", paths, has)
	}
	paths, has = parseMissing("offload-has gzip\n")
	if len(paths) != 0 || has["zstd"] || !has["gzip"] {
		t.Errorf("got %q, %v", paths, has)
	}
}

// TestMissingScript: the script run on the machine lists the decompressors found on
// PATH and hands its stdin to `guix archive --missing`.
func TestMissingScript(t *testing.T) {
	sh := sshtest.NeedTool(t, "sh")
	dir := t.TempDir()
	writeScript(t, dir, "guix", `[ "$*" = "archive --missing" ] || exit 9; cat`)
	writeScript(t, dir, "gzip", `exit 0`)
	if err := os.Symlink(sshtest.NeedTool(t, "cat"), filepath.Join(dir, "cat")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sh, "-c", missingScript)
	cmd.Env = []string{"PATH=" + dir} // no zstd there
	cmd.Stdin = strings.NewReader("/gnu/store/aaa-x\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	paths, has := parseMissing(string(out))
	if strings.Join(paths, " ") != "/gnu/store/aaa-x" || has["zstd"] || !has["gzip"] {
		t.Errorf("got %q, %v from %q", paths, has, out)
	}
}

// writeScript writes an executable sh script named name in dir.
func writeScript(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// scriptPath is a PATH with the fake guix (and whatever else) in dir first, then the
// real decompressors.
func scriptPath(t *testing.T, dir string, tool string) string {
	t.Helper()
	p := sshtest.NeedTool(t, tool)
	return "PATH=" + dir + ":" + filepath.Dir(p) + ":/usr/bin:/bin"
}

func compress(t *testing.T, c Compression, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := newCompressor(c, &b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func decompress(c Compression, data []byte) ([]byte, error) {
	d := newDecompressor(c, bytes.NewReader(data))
	defer d.Close()
	return io.ReadAll(d)
}

func testData(n int) []byte {
	rnd := rand.New(rand.NewPCG(1, 2))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString("some text that compresses, ")
		for range 16 {
			b.WriteByte(byte(rnd.IntN(256)))
		}
	}
	return b.Bytes()[:n]
}

// TestExportScript: on the machine, export_z compresses the export by the machine's own
// zstd or gzip into what our decompressor reads, and the script's exit status is the
// export's even though the compressor ends the pipeline (POSIX sh has no pipefail),
// else the compressor's.
func TestExportScript(t *testing.T) {
	data := testData(300 << 10)
	for _, c := range []Compression{CompressZstd, CompressGzip} {
		t.Run(string(c), func(t *testing.T) {
			for _, exportStatus := range []int{0, 3} {
				dir := t.TempDir()
				src := filepath.Join(dir, "data")
				if err := os.WriteFile(src, data, 0o644); err != nil {
					t.Fatal(err)
				}
				writeScript(t, dir, "guix", `[ "$1 $2 $3 $4" = "archive --export /gnu/store/a /gnu/store/b" ] || exit 9
cat `+src+`; exit `+strconv.Itoa(exportStatus))
				cmd := exec.Command("sh", "-c", transferFuncs+`; export_z "$@"`, "sh", string(c), "/gnu/store/a", "/gnu/store/b")
				cmd.Env = []string{scriptPath(t, dir, string(c))}
				out, err := cmd.Output()
				if got := exitStatus(err); got != exportStatus {
					t.Fatalf("export exited %d: script exited %d (%v)", exportStatus, got, err)
				}
				got, err := decompress(c, out)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("decompressed %d bytes (%v), want the %d exported", len(got), err, len(data))
				}
			}
			// A compressor that fails fails the script when the export did not.
			dir := t.TempDir()
			writeScript(t, dir, "guix", `echo data`)
			writeScript(t, dir, string(c), `cat >/dev/null; exit 5`)
			cmd := exec.Command("sh", "-c", transferFuncs+`; export_z "$@"`, "sh", string(c), "/gnu/store/a")
			cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin"}
			if _, err := cmd.Output(); exitStatus(err) != 5 {
				t.Errorf("compressor exited 5: script %v", err)
			}
		})
	}
}

// TestImportScript: on the machine, import_z has the machine's zstd or gzip decompress what our
// compressor made into `guix archive --import`; a corrupt stream or a failed import
// fails the script.
func TestImportScript(t *testing.T) {
	data := testData(300 << 10)
	for _, c := range []Compression{CompressZstd, CompressGzip} {
		t.Run(string(c), func(t *testing.T) {
			good := compress(t, c, data)
			bad := bytes.Clone(good)
			bad[len(bad)/2] ^= 0x55
			for _, tc := range []struct {
				name         string
				in           []byte
				importStatus int
				wantOK       bool
			}{
				{"good", good, 0, true},
				{"corrupt", bad, 0, false},
				{"truncated", good[:len(good)/2], 0, false},
				{"import-fails", good, 4, false},
			} {
				dir := t.TempDir()
				dst := filepath.Join(dir, "imported")
				writeScript(t, dir, "guix", `[ "$*" = "archive --import" ] || exit 9
cat > `+dst+`; exit `+strconv.Itoa(tc.importStatus))
				cmd := exec.Command("sh", "-c", transferFuncs+`; import_z "$1"`, "sh", string(c))
				cmd.Env = []string{scriptPath(t, dir, string(c))}
				cmd.Stdin = bytes.NewReader(tc.in)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				err := cmd.Run()
				if (err == nil) != tc.wantOK {
					t.Errorf("%s: script: %v, want success %v; stderr %q", tc.name, err, tc.wantOK, stderr.String())
				}
				if tc.importStatus != 0 && exitStatus(err) != tc.importStatus {
					t.Errorf("%s: import exited %d, script %v", tc.name, tc.importStatus, err)
				}
				if tc.wantOK {
					if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
						t.Errorf("%s: the import got %d bytes, want %d", tc.name, len(got), len(data))
					}
				}
			}
		})
	}
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestDecompressorErrors: a corrupt or empty stream is a refusal (storeio.IsRefusal);
// the transport's own failure is passed on as it is.
func TestDecompressorErrors(t *testing.T) {
	data := testData(200 << 10)
	for _, c := range []Compression{CompressZstd, CompressGzip} {
		good := compress(t, c, data)
		if got, err := decompress(c, good); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: round trip: %d bytes, %v", c, len(got), err)
		}
		bad := bytes.Clone(good)
		bad[len(bad)/2] ^= 0x55
		for name, in := range map[string][]byte{"corrupt": bad, "truncated": good[:len(good)/2], "empty": nil, "garbage": []byte("not compressed at all")} {
			_, err := decompress(c, in)
			var ce *CorruptStreamError
			if !errors.As(err, &ce) || !storeio.IsRefusal(err) {
				t.Errorf("%s %s: got %v, want a refused corrupt stream", c, name, err)
			}
		}
		broken := errors.New("connection lost")
		d := newDecompressor(c, io.MultiReader(bytes.NewReader(good[:len(good)/2]), errReader{broken}))
		_, err := io.ReadAll(d)
		d.Close()
		if !errors.Is(err, broken) || storeio.IsRefusal(err) {
			t.Errorf("%s: a broken transport gave %v, want it as it is", c, err)
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
