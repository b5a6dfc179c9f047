package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"offload/integration/drv"
	"offload/integration/farm"
	"offload/sshexec/sshtest"
)

// Compression on the wire (hook/compress.go) through the real binary, a real sshd and
// the machine's own zstd and gzip.

// copyDrv is a derivation whose output is a copy of a compressible input (text and a
// real program), so that the streams shrink when compressed.
func copyDrv(t *testing.T, f *farm.Farm, nonce string) *drv.Derivation {
	t.Helper()
	prog, err := os.ReadFile(sshtest.NeedTool(t, "sh"))
	if err != nil {
		t.Fatal(err)
	}
	in := f.AddLocalItem("cin-"+nonce, map[string]string{
		"text": strings.Repeat("compressible text for "+nonce+"\n", 40000),
		"prog": string(prog),
	})
	return f.MakeDrv(drv.Spec{
		Name:      "t-copy",
		Args:      []string{"-c", `/bin/cp -r "$FAKEGUIX_STORE/${IN##*/}" "$out"`},
		Env:       map[string]string{"IN": in},
		InputSrcs: []string{in},
		Nonce:     nonce,
	})
}

// sameAsMachine checks that each output of d is in the local store, byte-identical to
// the machine's copy.
func sameAsMachine(t *testing.T, m *farm.Machine, d *drv.Derivation) {
	t.Helper()
	for _, out := range d.OutputPaths() {
		remote, _ := m.Store.Drv().Real(out)
		for _, name := range []string{"text", "prog"} {
			a, err := os.ReadFile(filepath.Join(out, name))
			if err != nil {
				t.Fatalf("output not in the local store: %v", err)
			}
			b, err := os.ReadFile(filepath.Join(remote, name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s/%s differs from the machine's copy", out, name)
			}
		}
	}
}

// traced returns the lines of the --verbose trace that contain sub.
// isSSHTrace tells a traced ssh command line ("+ /usr/bin/ssh -i ...") from the others.
func isSSHTrace(l string) bool {
	f := strings.Fields(l)
	return len(f) > 1 && f[0] == "+" && filepath.Base(f[1]) == "ssh"
}

func traced(messages, sub string) []string {
	var lines []string
	for _, l := range strings.Split(messages, "\n") {
		if strings.HasPrefix(l, "+ ") && strings.Contains(l, sub) {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestCompressionModes: each OFFLOAD_COMPRESSION mode offloads a build whose outputs
// come back byte-identical; auto picks zstd on a machine that has it; the offload's one
// session goes over ssh without its compression unless the mode is ssh, and compressed
// streams are smaller on the wire.
func TestCompressionModes(t *testing.T) {
	sshtest.NeedTool(t, "zstd")
	sshtest.NeedTool(t, "gzip")
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	for _, c := range []struct{ mode, want string }{
		{"", "zstd"},
		{"zstd", "zstd"},
		{"gzip", "gzip"},
		{"none", "none"},
		{"ssh", "ssh"},
		{"bogus", "zstd"}, // said, then auto
	} {
		t.Run("mode="+c.mode, func(t *testing.T) {
			d := copyDrv(t, f, "mode-"+c.mode)
			ran := len(m.Invocations())
			r := offload(t, f, d, buildOpts{shell: true, env: []string{"OFFLOAD_COMPRESSION=" + c.mode, "OFFLOAD_VERBOSE=1"}})
			if r.answer != "accept" || r.status != 0 {
				t.Fatalf("answer %s, status %d:\n%s", r.answer, r.status, r.messages)
			}
			sameAsMachine(t, m, d)
			for _, line := range []string{"sending 2 store items to '127.0.0.1", "retrieving 1 store item from '127.0.0.1"} {
				if l := lineWith(r.messages, line); !strings.HasSuffix(l, "("+c.want+")...") {
					t.Errorf("want %s: %q", c.want, l)
				}
			}
			if c.mode == "bogus" && !strings.Contains(r.messages, `OFFLOAD_COMPRESSION="bogus" is not one of`) {
				t.Errorf("a bad OFFLOAD_COMPRESSION went unsaid:\n%s", r.messages)
			}
			// ssh compression: off for the session, unless left to ssh. (The hook once
			// ran each step as its own ssh command; now the probe and the session are
			// the only remote commands.)
			wantSSH := "-o Compression=no"
			if c.want == "ssh" {
				wantSSH = "-o Compression=yes"
			}
			var sessions []string
			for _, l := range slicesFilter(traced(r.messages, "ssh"), isSSHTrace) {
				if !strings.Contains(l, " -n -N -f ") && !strings.Contains(l, "/proc/loadavg") {
					sessions = append(sessions, l)
				}
			}
			if len(sessions) != 1 || !strings.Contains(sessions[0], wantSSH) {
				t.Errorf("want one ssh session for the offload, with %s:\n%s", wantSSH, strings.Join(sessions, "\n"))
			}
			// In it, the machine imported once and exported once.
			inv := strings.Join(m.Invocations()[ran:], "\n")
			if strings.Count(inv, "guix archive --import") != 1 || strings.Count(inv, "guix archive --export") != 1 {
				t.Errorf("the machine's guix runs, want one import and one export:\n%s", inv)
			}
			paths := map[string]bool{}
			for _, l := range slicesFilter(traced(r.messages, "ssh"), isSSHTrace) {
				if i := strings.Index(l, "ControlPath="); i >= 0 {
					paths[strings.Fields(l[i:])[0]] = true
				}
			}
			if len(paths) != 1 {
				t.Errorf("the offload's commands use %d ssh connections, want 1: %v", len(paths), paths)
			}
			sent, got := lineWith(r.messages, "offload: sent "), lineWith(r.messages, "offload: retrieved ")
			if c.want == "zstd" || c.want == "gzip" {
				// The input holds 1 MB of repeated text: compressed, it is far
				// smaller than uncompressed.
				for _, l := range []string{sent, got} {
					m := wireRe.FindStringSubmatch(l)
					if m == nil || m[2] != c.want || atof(m[1]) >= atof(m[3])/2 {
						t.Errorf("not compressed with %s on the wire: %q", c.want, l)
					}
				}
			}
		})
	}
}

// wireRe reads a "sent" or "retrieved" line of a compressed transfer.
var wireRe = regexp.MustCompile(`\(([0-9.]+) MiB on the wire, (\w+); ([0-9.]+) MiB uncompressed\)`)

func atof(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}

func slicesFilter(s []string, keep func(string) bool) []string {
	var out []string
	for _, x := range s {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}

// withoutZstdPath makes a directory of links to every program of /usr/bin but zstd's,
// for a machine without zstd on a host where /usr/bin has it.
func withoutZstdPath(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bin")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir("/usr/bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if strings.Contains(e.Name(), "zstd") {
			continue
		}
		if err := os.Symlink(filepath.Join("/usr/bin", e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// wrapSessions makes every ssh session on m run through a script (authorized_keys
// command=): with PATH set to path, and, when export is not "", with the machine's
// `guix archive --export` command line piped through it.
func wrapSessions(t *testing.T, f *farm.Farm, m *farm.Machine, path, export string) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "session")
	body := "#!/bin/sh\nPATH=" + path + "; export PATH\n"
	if export != "" {
		body += `case $SSH_ORIGINAL_COMMAND in *"guix archive --export"*)
	/bin/sh -c "$SSH_ORIGINAL_COMMAND" | { ` + export + `; }; exit 0;;
esac
`
	}
	body += `exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"` + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	forceCommand(t, m, script)
}

// TestCompressionAutoWithoutZstd: on a machine without zstd, auto picks gzip, and a
// forced zstd falls back to it, saying why.
func TestCompressionAutoWithoutZstd(t *testing.T) {
	sshtest.NeedTool(t, "gzip")
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	wrapSessions(t, f, m, f.Bin.GuixDir+":"+withoutZstdPath(t), "")
	for _, mode := range []string{"auto", "zstd"} {
		d := copyDrv(t, f, "nozstd-"+mode)
		r := offload(t, f, d, buildOpts{shell: true, env: []string{"OFFLOAD_COMPRESSION=" + mode}})
		if r.answer != "accept" || r.status != 0 {
			t.Fatalf("%s: answer %s, status %d:\n%s", mode, r.answer, r.status, r.messages)
		}
		sameAsMachine(t, m, d)
		if l := lineWith(r.messages, "sending 2 store items"); !strings.HasSuffix(l, "(gzip)...") {
			t.Errorf("%s: want gzip on a machine without zstd: %q", mode, l)
		}
		if l := lineWith(r.messages, "retrieving 1 store item"); !strings.HasSuffix(l, "(gzip)...") {
			t.Errorf("%s: want gzip on a machine without zstd: %q", mode, l)
		}
		said := strings.Contains(r.messages, "OFFLOAD_COMPRESSION=zstd but the machine has no zstd; using gzip")
		if said != (mode == "zstd") {
			t.Errorf("%s: the fallback said %v:\n%s", mode, said, r.messages)
		}
	}
}

// TestCorruptCompressedStream: a compressed stream from the machine that does not
// decompress is refused, with nothing in the local store. (The stream is corrupted by
// the machine's compressor; it was the whole export command's output when the export
// was a session of its own.)
func TestCorruptCompressedStream(t *testing.T) {
	sshtest.NeedTool(t, "dd")
	sshtest.NeedTool(t, "tr")
	for _, mode := range []string{"zstd", "gzip"} {
		t.Run(mode, func(t *testing.T) {
			real := sshtest.NeedTool(t, mode)
			f := farm.New(t, farm.Options{})
			writeMachines(f, nil)
			m := f.Machines[0]
			// The machine's compressor, when it compresses, has byte 64 of its stream's
			// top bit flipped.
			wrap := filepath.Join(t.TempDir(), "bin")
			if err := os.Mkdir(wrap, 0o755); err != nil {
				t.Fatal(err)
			}
			flip := `dd bs=1 count=64 2>/dev/null; dd bs=1 count=1 2>/dev/null | tr '\000-\377' '\200-\377\000-\177'; cat`
			z := "#!/bin/sh\nif [ \"$*\" = \"-q -1 -c\" ]; then " + real + ` "$@" | { ` + flip + "; }; exit 0; fi\nexec " + real + ` "$@"` + "\n"
			if err := os.WriteFile(filepath.Join(wrap, mode), []byte(z), 0o755); err != nil {
				t.Fatal(err)
			}
			wrapSessions(t, f, m, wrap+":"+f.Bin.GuixDir+":/usr/bin:/bin", "")
			d := copyDrv(t, f, "corrupt-"+mode)
			before := storeEntries(t, f)
			r := offload(t, f, d, buildOpts{shell: true, env: []string{"OFFLOAD_COMPRESSION=" + mode}})
			if r.answer != "accept" || r.status != 1 {
				t.Fatalf("answer %s, status %d, want a transient failure:\n%s", r.answer, r.status, r.messages)
			}
			if !strings.Contains(r.messages, "': refusing what it returned: ") {
				t.Errorf("the corrupt stream was not refused:\n%s", r.messages)
			}
			assertNotInStore(t, f, d.OutputPaths(), before)
		})
	}
}

// TestCompressedExportFails: when the machine's `guix archive --export` fails, its
// compressor still ends the stream properly; the failure is reported as the export's
// (its exit status and message), not as a refused archive.
func TestCompressedExportFails(t *testing.T) {
	sshtest.NeedTool(t, "zstd")
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	// A guix whose export stops after 100 bytes and fails.
	wrap := filepath.Join(t.TempDir(), "bin")
	if err := os.Mkdir(wrap, 0o755); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(f.Bin.GuixDir, "guix")
	guix := `#!/bin/sh
if [ "$1 $2" = "archive --export" ]; then
	` + real + ` "$@" | /usr/bin/head -c 100
	echo "guix archive: error: the disk is on fire" >&2
	exit 3
fi
exec ` + real + ` "$@"
`
	if err := os.WriteFile(filepath.Join(wrap, "guix"), []byte(guix), 0o755); err != nil {
		t.Fatal(err)
	}
	wrapSessions(t, f, m, wrap+":"+f.Bin.GuixDir+":/usr/bin:/bin", "")
	d := copyDrv(t, f, "exportfails")
	before := storeEntries(t, f)
	r := offload(t, f, d, buildOpts{shell: true, env: []string{"OFFLOAD_COMPRESSION=zstd", "OFFLOAD_ATTEMPTS=1"}})
	if r.answer != "accept" || r.status != 1 {
		t.Fatalf("answer %s, status %d, want a transient failure:\n%s", r.answer, r.status, r.messages)
	}
	l := lineWith(r.messages, "retrieving outputs: ")
	if !strings.Contains(l, "exited with status 3") || !strings.Contains(l, "the disk is on fire") || strings.Contains(r.messages, "refusing") {
		t.Errorf("the export's failure is not reported as such:\n%s", r.messages)
	}
	assertNotInStore(t, f, d.OutputPaths(), before)
}
