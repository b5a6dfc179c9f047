package hook

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"offload/machines"
	"offload/sshexec"
	"offload/sshexec/sshtest"
	"offload/storeio"
)

// The remote side of the offload's one session (sessionScript), run here by the local
// shells with a fake guix, the hook's side played by the test line by line.

// fakeGuixScript is a guix for sessionScript's steps, over "store paths" that are
// plain files: it logs each run in $T/log, and `guix build` also logs in $T/during
// what the roots directories hold while it builds. $FAIL=build fails the build, like
// the daemon (its message on stderr, exit 1).
const fakeGuixScript = `echo "$*" >> "$T/log"
case "$1 $2" in
"archive --missing") while IFS= read -r p; do [ -e "$p" ] || echo "$p"; done ;;
"archive --import") cat > "$T/imported" ;;
"archive --export") shift 2; for p; do cat "$p"; done; echo "exporting" >&2 ;;
"build -d") ln -s "$5" "$4"; echo "$5" ;;
"build -r")
	link=$3
	for a; do drv=$a; done
	{ ls -1A "$T/roots"; ls -1A "$T/state/gcroots/tmp"; } 2>/dev/null | sort | tr '\n' ' ' >> "$T/during"
	if [ "$FAIL" = build ]; then
		printf "builder for \140%s' failed with exit code 1\n" "$drv" >&2
		exit 1
	fi
	echo "the build log" >&2
	echo built > "$T/out"
	ln -s "$T/out" "$link"
	echo "$T/out" ;;
*) echo "unexpected guix $*" >&2; exit 9 ;;
esac
`

// shells are the POSIX shells the script runs under here: sh (dash on Debian) and,
// when present, bash in POSIX mode (Guix System's sh).
func shells(t *testing.T) [][]string {
	sh := [][]string{{sshtest.NeedTool(t, "sh")}}
	if b, err := exec.LookPath("bash"); err == nil {
		sh = append(sh, []string{b, "--posix"})
	}
	return sh
}

// scriptRun is one run of sessionScript.
type scriptRun struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *syncBuffer
}

// startScript runs sessionScript in dir T with the fake guix first on PATH, roots in
// T/roots, as root ROOT for drv, with token TOKEN, the limits and outputs given.
func startScript(t *testing.T, shell []string, T string, env []string, drv, maxSilent, timeout string, outputs ...string) *scriptRun {
	t.Helper()
	return startScriptSetup(t, shell, T, nil, env, drv, maxSilent, timeout, outputs...)
}

// startScriptSetup is startScript with setup(t, T) run after the fake guix is in place.
func startScriptSetup(t *testing.T, shell []string, T string, setup func(*testing.T, string), env []string, drv, maxSilent, timeout string, outputs ...string) *scriptRun {
	t.Helper()
	bin := filepath.Join(T, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	writeScript(t, bin, "guix", fakeGuixScript)
	if setup != nil {
		setup(t, T)
	}
	args := append(append(shell[1:], "-c", sessionScript, "sh", filepath.Join(T, "roots"), "ROOT", drv, "TOKEN", maxSilent, timeout, "1", "thishost 42"), outputs...)
	cmd := exec.Command(shell[0], args...)
	cmd.Dir = T
	// GUIX_STATE_DIRECTORY: never this host's /var/guix (a test may give its own).
	cmd.Env = append([]string{"T=" + T, "PATH=" + bin + ":" + os.Getenv("PATH"), slotsDirEnv + "=" + filepath.Join(T, "slots"),
		"GUIX_STATE_DIRECTORY=" + filepath.Join(T, "no-var-guix")}, env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r := &scriptRun{t: t, cmd: cmd, stdin: in, stdout: bufio.NewReader(out), stderr: &syncBuffer{}}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return r
}

func (r *scriptRun) send(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.stdin, s); err != nil {
		r.t.Fatal(err)
	}
}

// lines reads stdout lines up to and including want.
func (r *scriptRun) linesUntil(want string) []string {
	r.t.Helper()
	var got []string
	for {
		l, err := r.stdout.ReadString('\n')
		if err != nil {
			r.t.Fatalf("stdout ended (%v) before %q; got %q; stderr %q", err, want, got, r.stderr.String())
		}
		l = strings.TrimSuffix(l, "\n")
		got = append(got, l)
		if l == want {
			return got
		}
	}
}

// end reads the rest of stdout and returns it with the script's exit status.
func (r *scriptRun) end() ([]byte, int) {
	r.t.Helper()
	rest, err := io.ReadAll(r.stdout)
	if err != nil {
		r.t.Fatal(err)
	}
	return rest, exitStatus(r.cmd.Wait())
}

func readLog(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// TestSessionScript: the framing, the order of the steps, the roots during the build
// and after, for a machine that lacks the .drv and one input, receives them
// uncompressed, builds and exports the output.
func TestSessionScript(t *testing.T) {
	for _, shell := range shells(t) {
		t.Run(filepath.Base(shell[0]), func(t *testing.T) {
			T := t.TempDir()
			have := filepath.Join(T, "have-input")
			os.WriteFile(have, []byte("x"), 0o644)
			drv, lacked := filepath.Join(T, "x.drv"), filepath.Join(T, "lacked-input")
			// Roots dir entries: a stale one the hook will name, one it will not.
			os.MkdirAll(filepath.Join(T, "roots"), 0o755)
			os.Symlink("/nonexistent", filepath.Join(T, "roots", "stale"))
			os.Symlink("/nonexistent", filepath.Join(T, "roots", "other"))
			os.Symlink("/nonexistent", filepath.Join(T, "roots", "not ours")) // not listed: names travel space-separated
			r := startScript(t, shell, T, nil, drv, "", "7", filepath.Join(T, "out"))
			r.send(strings.Join([]string{drv, have, lacked}, " ") + "\n")
			head := r.linesUntil(lineMissingEnd)
			var roots, paths []string
			for _, l := range head {
				if n, ok := strings.CutPrefix(l, rootPrefix); ok {
					roots = append(roots, n)
				} else if !strings.HasPrefix(l, toolPrefix) && l != lineMissingEnd {
					paths = append(paths, l)
				}
			}
			if !reflect.DeepEqual(roots, []string{"other", "stale"}) || !reflect.DeepEqual(paths, []string{drv, lacked}) {
				t.Fatalf("roots %q, missing %q; want [other stale], the .drv and the lacked input; all: %q", roots, paths, head)
			}
			// The .drv "arrives" with the import (the fake import writes T/imported).
			os.WriteFile(drv, []byte("drv"), 0o644)
			r.send("none send stale\n")
			r.send("the bundle")
			r.stdin.Close()
			// "offload-alive" comes every second while the build runs: on a loaded
			// machine, even this one's.
			got := slices.DeleteFunc(r.linesUntil(lineBuilt), func(l string) bool { return l == lineAlive })
			if !reflect.DeepEqual(got, []string{lineImported, lineBuilding, lineBuilt}) {
				t.Errorf("after the header: %q", got)
			}
			export, st := r.end()
			if st != 0 || string(export) != "built\n" {
				t.Fatalf("exit %d, export %q; stderr %q", st, export, r.stderr.String())
			}
			if b, _ := os.ReadFile(filepath.Join(T, "imported")); string(b) != "the bundle" {
				t.Errorf("imported %q", b)
			}
			wantLog := "archive --missing\narchive --import\n" +
				"build -d -r " + T + "/roots/ROOT.drv " + drv + "\n" +
				"build -r " + T + "/roots/ROOT --verbosity=3 --timeout=7 " + drv + "\n" +
				"archive --export " + T + "/out\n"
			if got := readLog(t, filepath.Join(T, "log")); got != wantLog {
				t.Errorf("guix runs:\n%s\nwant:\n%s", got, wantLog)
			}
			// During the build: the .drv rooted, the stale root gone, the other kept.
			if got := readLog(t, filepath.Join(T, "during")); got != "ROOT.drv not ours other " {
				t.Errorf("roots during the build: %q", got)
			}
			if ents, _ := os.ReadDir(filepath.Join(T, "roots")); len(ents) != 2 || ents[1].Name() != "other" {
				t.Errorf("roots after the session: %v, want only the other hooks'", ents)
			}
			// stderr: the build log between the two markers, the export's after.
			want := "\037offload-phase TOKEN build\nthe build log\n\037offload-phase TOKEN export\nexporting\n"
			if got := r.stderr.String(); got != want {
				t.Errorf("stderr %q, want %q", got, want)
			}
		})
	}
}

// TestSessionScriptDirectRoot: where the daemon's gcroots directory is writable, the
// .drv's root is a symlink in gcroots/tmp, made without a guix process, and nothing
// is sent when nothing is missing.
func TestSessionScriptDirectRoot(t *testing.T) {
	for _, shell := range shells(t) {
		t.Run(filepath.Base(shell[0]), func(t *testing.T) {
			T := t.TempDir()
			state := filepath.Join(T, "state")
			os.MkdirAll(filepath.Join(state, "gcroots"), 0o755)
			drv := filepath.Join(T, "x.drv")
			os.WriteFile(drv, []byte("drv"), 0o644)
			r := startScript(t, shell, T, []string{"GUIX_STATE_DIRECTORY=" + state}, drv, "5", "", filepath.Join(T, "out"))
			r.send(drv + "\n")
			r.linesUntil(lineMissingEnd)
			r.send("none skip\n")
			r.stdin.Close()
			r.linesUntil(lineBuilt)
			if export, st := r.end(); st != 0 || string(export) != "built\n" {
				t.Fatalf("exit %d, export %q; stderr %q", st, export, r.stderr.String())
			}
			wantLog := "archive --missing\n" +
				"build -r " + T + "/roots/ROOT --verbosity=3 --max-silent-time=5 " + drv + "\n" +
				"archive --export " + T + "/out\n"
			if got := readLog(t, filepath.Join(T, "log")); got != wantLog {
				t.Errorf("guix runs:\n%s\nwant:\n%s", got, wantLog)
			}
			if got := readLog(t, filepath.Join(T, "during")); got != "ROOT.drv " {
				t.Errorf("roots during the build: %q, want the .drv's in gcroots/tmp", got)
			}
			if _, err := os.Lstat(filepath.Join(state, "gcroots", "tmp", "ROOT.drv")); !os.IsNotExist(err) {
				t.Errorf("the .drv's root is left: %v", err)
			}
		})
	}
}

// TestSessionScriptBuildFails: a failed build ends the script with its status after
// "offload-building", nothing is exported, and the roots are removed.
func TestSessionScriptBuildFails(t *testing.T) {
	for _, shell := range shells(t) {
		t.Run(filepath.Base(shell[0]), func(t *testing.T) {
			T := t.TempDir()
			drv := filepath.Join(T, "x.drv")
			os.WriteFile(drv, []byte("drv"), 0o644)
			r := startScript(t, shell, T, []string{"FAIL=build"}, drv, "", "", filepath.Join(T, "out"))
			r.send(drv + "\n")
			r.linesUntil(lineMissingEnd)
			r.send("zstd skip\n")
			r.stdin.Close()
			r.linesUntil(lineBuilding)
			rest, st := r.end()
			if st != 1 || len(rest) != 0 {
				t.Errorf("exit %d, then %q on stdout; want 1 and nothing", st, rest)
			}
			if log := readLog(t, filepath.Join(T, "log")); strings.Contains(log, "--export") {
				t.Errorf("exported after a failed build:\n%s", log)
			}
			if ents, _ := os.ReadDir(filepath.Join(T, "roots")); len(ents) != 0 {
				t.Errorf("roots left: %v", ents)
			}
			if !strings.Contains(r.stderr.String(), "\037offload-phase TOKEN build\nbuilder for `"+drv+"' failed") {
				t.Errorf("stderr %q", r.stderr.String())
			}
		})
	}
}

// TestSessionScriptCompressed: with zstd or gzip, the bundle is decompressed into the
// import and the export comes back compressed.
func TestSessionScriptCompressed(t *testing.T) {
	data := testData(200 << 10)
	for _, c := range []Compression{CompressZstd, CompressGzip} {
		sshtest.NeedTool(t, string(c))
		t.Run(string(c), func(t *testing.T) {
			T := t.TempDir()
			drv := filepath.Join(T, "x.drv")
			os.WriteFile(filepath.Join(T, "big"), data, 0o644)
			r := startScript(t, shells(t)[0], T, nil, drv, "", "", filepath.Join(T, "big"))
			r.send(drv + "\n")
			r.linesUntil(lineMissingEnd)
			os.WriteFile(drv, []byte("drv"), 0o644)
			r.send(string(c) + " send\n")
			r.send(string(compress(t, c, data)))
			r.stdin.Close()
			r.linesUntil(lineBuilt)
			export, st := r.end()
			if st != 0 {
				t.Fatalf("exit %d: %q", st, r.stderr.String())
			}
			if b, _ := os.ReadFile(filepath.Join(T, "imported")); !bytes.Equal(b, data) {
				t.Errorf("imported %d bytes, want the %d sent", len(b), len(data))
			}
			if got, err := decompress(c, export); err != nil || !bytes.Equal(got, data) {
				t.Errorf("export decompressed to %d bytes (%v), want %d", len(got), err, len(data))
			}
		})
	}
}

// TestSessionScriptNoHeader: a hook that goes away before its header (it refused the
// machine's answer) ends the script, which removes nothing but its own roots.
func TestSessionScriptNoHeader(t *testing.T) {
	T := t.TempDir()
	drv := filepath.Join(T, "x.drv")
	r := startScript(t, shells(t)[0], T, nil, drv, "", "")
	r.send(drv + "\n")
	r.linesUntil(lineMissingEnd)
	r.stdin.Close()
	if rest, st := r.end(); st != 2 || len(rest) != 0 {
		t.Errorf("exit %d, stdout %q; want 2 and nothing", st, rest)
	}
	if log := readLog(t, filepath.Join(T, "log")); log != "archive --missing\n" {
		t.Errorf("guix runs: %q", log)
	}
}

// TestStderrRouter: the markers split the stream wherever the writes cut it; the build
// phase goes to the log; a marker with another token, or a line that only starts like
// one, is the build's own output.
func TestStderrRouter(t *testing.T) {
	stream := "importing\n\037nope\n\037offload-phase TOK build\n" +
		"log 1\n\037offload-phase OTHER export\n\037offload-phase TOK exp\nno newline" +
		"\n\037offload-phase TOK export\nexporting\n\037offload-phase TOK build\n"
	wantPre := "importing\n\037nope\n"
	wantBuild := "log 1\n\037offload-phase OTHER export\n\037offload-phase TOK exp\nno newline\n"
	wantExport := "exporting\n\037offload-phase TOK build\n"
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range 200 {
		log := &bytes.Buffer{}
		r := newStderrRouter("TOK", log)
		for rest := []byte(stream); len(rest) > 0; {
			n := 1 + rnd.IntN(min(len(rest), 1+i%30))
			r.Write(rest[:n])
			rest = rest[n:]
		}
		if r.tails[0].String() != wantPre || r.tails[1].String() != wantBuild || log.String() != wantBuild || r.tails[2].String() != wantExport {
			t.Fatalf("run %d: pre %q build %q log %q export %q", i, r.tails[0], r.tails[1], log, r.tails[2])
		}
	}
}

// TestRemovableRoots: before the build, the machine removes the roots of this host's
// dead hooks and any it holds under this build's own name (an earlier process with our
// pid), and nothing else.
func TestRemovableRoots(t *testing.T) {
	h := rootHost()
	own := rootName("/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv")
	deadPid := func() int {
		c := exec.Command("true")
		if err := c.Run(); err != nil {
			t.Fatal(err)
		}
		return c.Process.Pid
	}()
	dead := h + "-" + strconv.Itoa(deadPid) + "-abc-t"
	names := []string{own, own + ".drv", own + "-0", own + "-12", own + "-x", own + "x", dead, dead + ".drv",
		h + "-" + strconv.Itoa(deadPid) + "-a b", "otherhost-1-abc"}
	got := removableRoots(names, own)
	want := []string{dead, dead + ".drv", own, own + ".drv", own + "-0", own + "-12"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("removableRoots = %q, want %q", got, want)
	}
}

// The local side of the session (Hook.offload) against sessionScript run by a fake
// ssh that hands the remote command to the local sh, with a fake guix on each side.

// remoteGuixScript is the machine's guix for TestOffloadSession: $R/fail names the
// step that fails ("import", "drvroot", "build", "export") or, for "badpath", makes
// `--missing` answer a path it was not asked about. Its export is the bundle in
// $R/outputs.bundle.
const remoteGuixScript = `echo "$*" >> "$R/log"
fail=$(cat "$R/fail" 2>/dev/null)
case "$1 $2" in
"archive --missing")
	[ "$fail" = badpath ] && echo /gnu/store/00000000000000000000000000000000-not-asked
	while IFS= read -r p; do echo "$p"; done ;;
"archive --import")
	cat > "$R/imported"
	[ "$fail" = import ] && { echo "guix archive: error: unauthorized public key" >&2; exit 1; } ;;
"build -d")
	[ "$fail" = drvroot ] && { echo "guix build: error: cannot connect to the daemon" >&2; exit 1; }
	ln -s "$5" "$4" ;;
"build -r")
	for a; do drv=$a; done
	echo "builder output" >&2
	if [ "$fail" = build ]; then
		printf "builder for \140%s' failed with exit code 1\n" "$drv" >&2
		printf "guix build: error: build of \140%s' failed\n" "$drv" >&2
		exit 1
	fi ;;
"archive --export")
	cat "$R/outputs.bundle"
	[ "$fail" = export ] && { echo "guix archive: error: the disk is on fire" >&2; exit 3; } ;;
esac
exit 0
`

// sessionFixture is a hook with one machine behind the fake ssh.
type sessionFixture struct {
	h             *Hook
	m             *machines.Machine
	R             string // the machine's side: log, fail, imported, home
	out           *syncBuffer
	log           *syncBuffer
	drv, input    string
	output        string
	outputContent string
}

func newSessionFixture(t *testing.T) *sessionFixture {
	t.Helper()
	sshtest.NeedTool(t, "sh")
	T := t.TempDir()
	R := filepath.Join(T, "remote")
	store := filepath.Join(T, "store")
	conf := filepath.Join(T, "conf")
	for _, d := range []string{R, filepath.Join(R, "home"), filepath.Join(R, "bin"), store, conf, filepath.Join(T, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeScript(t, filepath.Join(R, "bin"), "guix", remoteGuixScript)
	// The fake ssh runs the remote command (its last argument) with the machine's guix.
	writeScript(t, filepath.Join(T, "bin"), "ssh", `for a; do c=$a; done
cd "$R/home" && PATH="$R/bin:$PATH" exec sh -c "$c"`)
	writeScript(t, filepath.Join(T, "bin"), "guix", `[ "$1 $2" = "archive --export" ] || exit 9
[ -e "$LOCALFAIL" ] && { echo "guix archive: error: no signing key" >&2; exit 1; }
shift 2; echo "bundle of $*"`)
	t.Setenv("R", R)
	t.Setenv(slotsDirEnv, filepath.Join(R, "slots"))                  // the machine's own build slots, out of the roots
	t.Setenv("GUIX_STATE_DIRECTORY", filepath.Join(R, "no-var-guix")) // never this host's /var/guix
	t.Setenv("LOCALFAIL", filepath.Join(T, "localfail"))

	// The output the machine returns: a bundle signed by a key our ACL trusts.
	key, err := storeio.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	acl, _ := storeio.ParseACL([]byte("(acl)"))
	acl.Add(key.Public())
	if err := os.WriteFile(filepath.Join(conf, "acl"), acl.MarshalText(), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &sessionFixture{R: R, out: &syncBuffer{}, log: &syncBuffer{},
		drv:    store + "/x37x84zbqzs261xph9j4zdlbm7mmnix1-t.drv",
		input:  store + "/a37x84zbqzs261xph9j4zdlbm7mmnix1-in",
		output: store + "/b37x84zbqzs261xph9j4zdlbm7mmnix1-t", outputContent: "the output\n"}
	src := filepath.Join(T, "built")
	os.WriteFile(src, []byte(f.outputContent), 0o644)
	var b bytes.Buffer
	bw := storeio.NewBundleWriter(&b, key)
	if err := bw.Add(src, storeio.ItemInfo{Path: f.output}); err != nil {
		t.Fatal(err)
	}
	if err := bw.Close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(R, "outputs.bundle"), b.Bytes(), 0o644)

	f.m = &machines.Machine{Name: "build1", Port: 2222, User: "u", ParallelBuilds: 1}
	f.h = &Hook{
		Conf: Config{StoreDir: store, ConfDir: conf, StateDir: filepath.Join(T, "state"), Guix: filepath.Join(T, "bin", "guix"),
			Compression: "none", LockWait: time.Minute},
		Out: f.out, Log: f.log,
		Runner: &sshexec.Runner{StateDir: filepath.Join(T, "state"), SSH: filepath.Join(T, "bin", "ssh"), ControlPersist: -1, UseKnownHosts: true},
	}
	f.h.init()
	return f
}

func (f *sessionFixture) fail(t *testing.T, step string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.R, "fail"), []byte(step), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *sessionFixture) run() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.h.offload(ctx, f.m, f.h.target(f.m), Request{Drv: f.drv}, []string{f.input}, []string{f.output})
}

func (f *sessionFixture) remoteLog(t *testing.T) string { return readLog(t, filepath.Join(f.R, "log")) }

// TestOffloadSession: a whole offload in one session: the inputs sent, the build log
// on fd 4 without the script's markers, the output restored, the roots gone.
func TestOffloadSession(t *testing.T) {
	f := newSessionFixture(t)
	if err := f.run(); err != nil {
		t.Fatalf("offload: %v\n%s", err, f.out.String())
	}
	if b, err := os.ReadFile(f.output); err != nil || string(b) != f.outputContent {
		t.Errorf("output %q, %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.R, "imported")); string(b) != "bundle of "+f.input+" "+f.drv+"\n" {
		t.Errorf("the machine imported %q", b)
	}
	if log := f.log.String(); log != "builder output\n" {
		t.Errorf("fd 4 got %q, want the build's stderr alone", log)
	}
	for _, want := range []string{"sending 2 store items to 'build1:2222' (none)...", "@ build-remote " + f.drv + " build1:2222", "retrieving 1 store item", "done with offloaded"} {
		if !strings.Contains(f.out.String(), want) {
			t.Errorf("messages lack %q:\n%s", want, f.out.String())
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(f.R, "home", rootsDir)); len(ents) != 0 {
		t.Errorf("remote roots left: %v", ents)
	}
}

// TestOffloadSessionFailures: where the session fails tells whether another machine may
// take the build (before "offload-building") or the failure stands; no message names the
// machine (the hook's per-machine boundary does, once).
func TestOffloadSessionFailures(t *testing.T) {
	for _, c := range []struct {
		step        string
		beforeBuild bool
		want        string
		exit        int
	}{
		{"badpath", true, "it answered `guix archive --missing` with a path we did not ask about: \"/gnu/store/00000000000000000000000000000000-not-asked\"", ExitTransient},
		{"import", true, "sending 2 store items: `guix archive --import` exited with status 1: guix archive: error: unauthorized public key", ExitTransient},
		{"drvroot", true, ": `guix build -d -r` exited with status 1: guix build: error: cannot connect to the daemon", ExitTransient},
		{"build", false, "' failed: build failed", ExitBuildFailed},
		{"export", false, "retrieving outputs: `guix archive --export` exited with status 3: guix archive: error: the disk is on fire", ExitTransient},
		{"local", true, "sending 2 store items: local `guix archive --export`: ", ExitTransient},
	} {
		t.Run(c.step, func(t *testing.T) {
			f := newSessionFixture(t)
			if c.step == "local" {
				os.WriteFile(os.Getenv("LOCALFAIL"), nil, 0o644)
			} else {
				f.fail(t, c.step)
			}
			err := f.run()
			if err == nil {
				t.Fatalf("offload succeeded:\n%s", f.out.String())
			}
			var early *beforeBuildError
			var local *localError
			if errors.As(err, &early) != c.beforeBuild || (c.step == "local") != errors.As(err, &local) {
				t.Errorf("before the build: %v, local: %v; want %v, %v: %v", errors.As(err, &early), errors.As(err, &local), c.beforeBuild, c.step == "local", err)
			}
			if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "build1:2222") {
				t.Errorf("error %q, want it to hold %q and not to name the machine", err, c.want)
			}
			if ExitCode(err) != c.exit {
				t.Errorf("exit code %d, want %d", ExitCode(err), c.exit)
			}
			if started := strings.Contains(f.out.String(), "@ build-remote"); started == c.beforeBuild {
				t.Errorf("@ build-remote said: %v, the build started: %v", started, !c.beforeBuild)
			}
			if log := f.remoteLog(t); (c.step != "export") == strings.Contains(log, "--export") {
				t.Errorf("the machine's guix runs:\n%s", log)
			}
			if _, err := os.Lstat(f.output); err == nil {
				t.Errorf("the output is in the store after a failure")
			}
			if ents, _ := os.ReadDir(filepath.Join(f.R, "home", rootsDir)); len(ents) != 0 {
				t.Errorf("remote roots left: %v", ents)
			}
		})
	}
}
