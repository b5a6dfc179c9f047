package integration

// Nix's own remote builds (Debian's nix-bin) on this machine, timed in the same run as
// our benchmarks of the same shape, whose figures scripts/bench.sh divides by these:
// NixTiny by TinyOffload, NixSixBuilds by SixBuilds, NixSourceTree by SourceTree.
// scripts/nixfarm.sh sets Nix up (a build machine behind its own sshd, a local side that
// builds nothing itself; both stores on /nix in private mount namespaces) and tears it
// down. These report figures only: the Nix side is the baseline, so no base- metrics
// (except SixBuilds' ideal, as ours has).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"offload/sshexec/sshtest"
)

// nixFarm is one scripts/nixfarm.sh setup, stopped when the benchmark ends.
type nixFarm struct {
	b      *testing.B
	script string
	dir    string // the script's DIR: stores, keys, sshd's log
	exprs  string // our Nix expressions
}

// needNixFarm ends the benchmark when the Nix farm cannot run here: it fails under CI
// (CI runs as root with everything installed: a missing piece must not pass silently)
// and skips otherwise.
func needNixFarm(b *testing.B) {
	b.Helper()
	if os.Geteuid() != 0 {
		const why = "the Nix benchmarks need root: scripts/nixfarm.sh bind-mounts stores on /nix in private mount namespaces"
		if os.Getenv("CI") != "" {
			b.Fatal(why)
		}
		b.Skip(why)
	}
	for _, p := range []string{"nix-build", "nix-store", "nix-instantiate", "unshare", "nsenter", "ssh", "ssh-keygen", sshtest.SSHD} {
		sshtest.NeedTool(b, p)
	}
}

// startNixFarm starts a Nix farm; shellDelay, when not 0, is added to every ssh
// session's shell start-up on the machine (as slowShell does for ours).
func startNixFarm(b *testing.B, shellDelay time.Duration) *nixFarm {
	b.Helper()
	needNixFarm(b)
	sshdScript, err := sshtest.Script()
	if err != nil {
		b.Fatal(err)
	}
	n := &nixFarm{b: b, script: filepath.Join(filepath.Dir(sshdScript), "nixfarm.sh"),
		dir: filepath.Join(b.TempDir(), "nixfarm"), exprs: b.TempDir()}
	args := []string{n.script, "start", n.dir}
	if shellDelay > 0 {
		args = append(args, strconv.FormatFloat(shellDelay.Seconds(), 'f', 3, 64))
	}
	out, err := exec.Command("sh", args...).CombinedOutput()
	b.Cleanup(func() {
		if out, err := exec.Command("sh", n.script, "stop", n.dir).CombinedOutput(); err != nil {
			b.Errorf("nixfarm stop: %v: %s", err, out)
		}
	})
	if err != nil {
		b.Fatalf("nixfarm start: %v: %s", err, out)
	}
	b.Logf("nix version: %s", strings.TrimSpace(n.run("local", "nix-store", "--version")))
	for name, text := range nixExprs {
		if err := os.WriteFile(filepath.Join(n.exprs, name), []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return n
}

// run runs a nixfarm.sh command (local or remote) and returns its stdout.
func (n *nixFarm) run(side string, argv ...string) string {
	n.b.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("sh", append([]string{n.script, side, n.dir}, argv...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		n.b.Fatalf("nixfarm %s %s: %v: %s", side, strings.Join(argv, " "), err, stderr.Bytes())
	}
	return stdout.String()
}

// instantiate writes the derivations of expression file name (in n.exprs) with the
// string arguments args (K, V, ...) to the local store and returns their paths.
func (n *nixFarm) instantiate(name string, args ...string) []string {
	n.b.Helper()
	argv := []string{"nix-instantiate", filepath.Join(n.exprs, name)}
	for i := 0; i+1 < len(args); i += 2 {
		argv = append(argv, "--argstr", args[i], args[i+1])
	}
	return strings.Fields(n.run("local", argv...))
}

// nixRealised is one timed `nix-store --realise`.
type nixRealised struct {
	wall    time.Duration
	outputs []string
	// phases: the build hook's "copying dependencies to" (send) and "copying outputs
	// from" (fetch) activities, start to stop as their log lines arrived; copied: the
	// store paths each copied.
	phases map[string]time.Duration
	copied map[string]int
}

// realise builds drvs locally, which sends them all to the machine, and times it: the
// whole command, and the hook's copy phases from its log (--log-format internal-json,
// whose activity lines Nix passes up from its build hook as they happen).
func (n *nixFarm) realise(drvs ...string) nixRealised {
	n.b.Helper()
	argv := append([]string{n.script, "local", n.dir, "nix-store", "--realise", "--log-format", "internal-json", "-v"}, drvs...)
	cmd := exec.Command("sh", argv...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		n.b.Fatal(err)
	}
	r := nixRealised{phases: map[string]time.Duration{}, copied: map[string]int{}}
	var msgs []string
	var wg sync.WaitGroup
	wg.Add(1)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		n.b.Fatal(err)
	}
	go func() {
		defer wg.Done()
		started := map[int64]time.Time{} // phase activities by id
		phaseOf := map[int64]string{}
		var current string // the phase a path copy belongs to
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			now := time.Now()
			line := sc.Text()
			j, ok := strings.CutPrefix(line, "@nix ")
			if !ok {
				msgs = append(msgs, line)
				continue
			}
			var ev struct {
				Action string `json:"action"`
				ID     int64  `json:"id"`
				Text   string `json:"text"`
				Type   int    `json:"type"`
				Msg    string `json:"msg"`
			}
			if json.Unmarshal([]byte(j), &ev) != nil {
				msgs = append(msgs, line)
				continue
			}
			switch ev.Action {
			case "start":
				switch {
				case strings.HasPrefix(ev.Text, "copying dependencies to "):
					started[ev.ID], phaseOf[ev.ID], current = now, "send", "send"
				case strings.HasPrefix(ev.Text, "copying outputs from "):
					started[ev.ID], phaseOf[ev.ID], current = now, "fetch", "fetch"
				case ev.Type == 100 && current != "": // actCopyPath: one store path
					r.copied[current]++
				}
			case "stop":
				if p, ok := phaseOf[ev.ID]; ok {
					r.phases[p] += now.Sub(started[ev.ID])
					current = ""
				}
			case "msg":
				msgs = append(msgs, ev.Msg)
			}
		}
	}()
	wg.Wait()
	err = cmd.Wait()
	r.wall = time.Since(t0)
	if err != nil {
		n.b.Fatalf("nix-store --realise: %v:\n%s", err, strings.Join(msgs, "\n"))
	}
	r.outputs = strings.Fields(stdout.String())
	if len(r.outputs) != len(drvs) {
		n.b.Fatalf("nix-store --realise of %d derivations printed %d outputs: %q", len(drvs), len(r.outputs), r.outputs)
	}
	return r
}

// sessions counts the ssh sessions the machine's sshd has started so far.
func (n *nixFarm) sessions() int {
	n.b.Helper()
	log, err := os.ReadFile(filepath.Join(n.dir, "sshd.log"))
	if err != nil {
		n.b.Fatal(err)
	}
	return strings.Count(string(log), "Starting session:")
}

// reportSpread reports the median of ds as unit, and its smallest and largest as
// min-unit and max-unit, in seconds or milliseconds (scale).
func reportSpread(b *testing.B, ds []time.Duration, unit string, scale func(time.Duration) float64) {
	b.ReportMetric(scale(median(ds)), unit)
	b.ReportMetric(scale(slices.Min(ds)), "min-"+unit)
	b.ReportMetric(scale(slices.Max(ds)), "max-"+unit)
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// nixExprs are the derivations the Nix benchmarks build, each with a nonce so that
// every run builds something new. The builders run without PATH (Nix sets none), hence
// the absolute paths.
var nixExprs = map[string]string{
	"tiny.nix": `{ nonce }: derivation {
  name = "nix-tiny"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo hello > \"$out\"" ];
  inherit nonce;
}
`,
	// Each build writes its start and end time to log (outside the store: only /nix
	// is private to the machine) for the count of builds at once.
	"six.nix": `{ nonce, log, secs }: builtins.genList (i: derivation {
  name = "nix-six-${toString i}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" "echo start $(/bin/date +%s.%N) >> ${log}; /bin/sleep ${secs}; echo end $(/bin/date +%s.%N) >> ${log}; echo ok > \"$out\"" ];
  inherit nonce;
}) 6
`,
	// send: the tree is the input, the output one line (it names the tree, so it
	// refers to it, as our SourceTree's does); fetch: the output is a copy of the tree,
	// which the machine has by then.
	"tree.nix": `{ nonce, tree, mode }: derivation {
  name = "nix-tree-${mode}"; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" (if mode == "send" then "echo \"$IN\" > \"$out\"" else "/bin/cp -r \"$IN\" \"$out\"") ];
  IN = builtins.storePath tree;
  inherit nonce;
}
`,
}

// BenchmarkNixTiny: Nix's remote build of `echo hello > $out` (the machine lacks its
// .drv: Nix sends the derivation itself), the shape of our TinyOffload: the machine's
// shell start-up sleeps 100 ms more for every ssh session, as there. Median wall time
// of `nix-store --realise` (a new derivation each run) and ssh sessions per build; for
// scale, the median `ssh machine true` on a new connection each, as Nix's hook makes.
func BenchmarkNixTiny(b *testing.B) {
	runs := pick(7, 3)
	n := startNixFarm(b, 100*time.Millisecond)
	var trues []time.Duration
	for range 3 {
		t0 := time.Now()
		if out, err := exec.Command("ssh", "-F", filepath.Join(n.dir, "ssh_config"), "root@127.0.0.1", "true").CombinedOutput(); err != nil {
			b.Fatalf("ssh machine true: %v: %s", err, out)
		}
		trues = append(trues, time.Since(t0))
	}
	var walls []time.Duration
	s0 := n.sessions()
	for i := range runs {
		d := n.instantiate("tiny.nix", "nonce", fmt.Sprintf("tiny%d-%d", i, time.Now().UnixNano()))
		r := n.realise(d...)
		walls = append(walls, r.wall)
		if got := n.run("local", "cat", r.outputs[0]); got != "hello\n" {
			b.Fatalf("the tiny build's output holds %q", got)
		}
	}
	sessions := n.sessions() - s0
	reportSpread(b, walls, "wall-ms", ms)
	b.ReportMetric(float64(sessions)/float64(runs), "ssh-sessions/build")
	b.ReportMetric(ms(median(trues)), "ssh-true-ms")
	b.Logf("nix tiny builds: %v; %d ssh sessions; ssh true: %v", walls, sessions, trues)
}

// BenchmarkNixSixBuilds: six independent 3 s builds asked of Nix in one
// `nix-store --realise` of six derivations, with one machine of 2 slots (max-jobs 2 in
// its machines line) and no local builds (max-jobs 0): Nix's local scheduler and build
// hook decide what runs when. The shape of our SixBuilds; baseline the same ideal,
// 6 builds / 2 slots * 3 s = 9 s. Builds at once counted from the builders' own lines.
func BenchmarkNixSixBuilds(b *testing.B) {
	const builds, slots, secs = 6, 2, 3
	runs := pick(3, 1)
	n := startNixFarm(b, 0)
	var walls []time.Duration
	most := 0
	s0 := n.sessions()
	for i := range runs {
		log := filepath.Join(n.exprs, fmt.Sprintf("six-%d.log", i))
		drvs := n.instantiate("six.nix", "nonce", fmt.Sprintf("six%d-%d", i, time.Now().UnixNano()),
			"log", log, "secs", strconv.Itoa(secs))
		if len(drvs) != builds {
			b.Fatalf("six.nix gave %d derivations", len(drvs))
		}
		r := n.realise(drvs...)
		walls = append(walls, r.wall)
		most = max(most, mostAtOnce(b, log, builds))
	}
	sessions := n.sessions() - s0
	reportSpread(b, walls, "all-done-s", seconds)
	b.ReportMetric(float64(builds/slots*secs), "base-all-done-s")
	b.ReportMetric(float64(most), "max-concurrent-on-machine")
	b.ReportMetric(float64(sessions)/float64(runs*builds), "ssh-sessions/build")
	b.Logf("nix six builds: %v; at most %d at once; %d ssh sessions", walls, most, sessions)
}

// mostAtOnce reads the builders' "start T" and "end T" lines in log and returns how
// many builds ran at once at most; all want builds must have ended.
func mostAtOnce(b *testing.B, log string, want int) int {
	b.Helper()
	text, err := os.ReadFile(log)
	if err != nil {
		b.Fatal(err)
	}
	type ev struct {
		t     float64
		delta int
	}
	var evs []ev
	ends := 0
	for _, l := range strings.Split(strings.TrimSpace(string(text)), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			b.Fatalf("%s: bad line %q", log, l)
		}
		t, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			b.Fatalf("%s: bad line %q", log, l)
		}
		d := 1
		if f[0] == "end" {
			d = -1
			ends++
		}
		evs = append(evs, ev{t, d})
	}
	if ends != want {
		b.Fatalf("%s: %d builds ended, want %d", log, ends, want)
	}
	// An end and a start at the same instant do not overlap.
	slices.SortFunc(evs, func(x, y ev) int {
		if x.t != y.t {
			if x.t < y.t {
				return -1
			}
			return 1
		}
		return x.delta - y.delta
	})
	at, most := 0, 0
	for _, e := range evs {
		at += e.delta
		most = max(most, at)
	}
	return most
}

// BenchmarkNixSourceTree: Go's own src/ (as our SourceTree; src/net under BENCH_QUICK)
// added to the local store with `nix-store --add`, then each run: sent to the machine
// as the input of a build with a one-line output (send-s: the build hook's "copying
// dependencies" phase), and brought back as the output of a build that copies it there
// (fetch-s: its "copying outputs" phase). The machine's store is emptied (its garbage
// collector) before each run, so the tree is sent every time; each fetched copy is
// deleted here after its run. send-build-s and fetch-build-s: the whole
// `nix-store --realise` of each.
func BenchmarkNixSourceTree(b *testing.B) {
	runs := pick(3, 1)
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Fatalf("go env GOROOT: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(goroot)), "src")
	if benchQuick() {
		src = filepath.Join(src, "net")
	}
	n := startNixFarm(b, 0)
	tree := strings.TrimSpace(n.run("local", "nix-store", "--add", src))
	size, err := strconv.ParseFloat(strings.TrimSpace(n.run("local", "nix-store", "--query", "--size", tree)), 64)
	if err != nil {
		b.Fatalf("size of %s: %v", tree, err)
	}
	var sends, fetches, sendBuilds, fetchBuilds []time.Duration
	for i := range runs {
		n.run("remote", "nix-collect-garbage")
		nonce := fmt.Sprintf("tree%d-%d", i, time.Now().UnixNano())
		up := n.realise(n.instantiate("tree.nix", "nonce", nonce, "tree", tree, "mode", "send")...)
		if up.copied["send"] < 1 {
			b.Fatalf("run %d: the tree was not sent (%d paths copied)", i, up.copied["send"])
		}
		down := n.realise(n.instantiate("tree.nix", "nonce", nonce, "tree", tree, "mode", "fetch")...)
		if down.copied["send"] != 0 || down.copied["fetch"] != 1 {
			b.Fatalf("run %d: the fetch build sent %d paths and fetched %d, want 0 and 1", i, down.copied["send"], down.copied["fetch"])
		}
		got, err := strconv.ParseFloat(strings.TrimSpace(n.run("local", "nix-store", "--query", "--size", down.outputs[0])), 64)
		if err != nil || got < size*0.99 || got > size*1.01 {
			b.Fatalf("run %d: the fetched copy is %v bytes (%v), the tree %v", i, got, err, size)
		}
		sends, fetches = append(sends, up.phases["send"]), append(fetches, down.phases["fetch"])
		sendBuilds, fetchBuilds = append(sendBuilds, up.wall), append(fetchBuilds, down.wall)
		n.run("local", "nix-store", "--delete", down.outputs[0])
	}
	reportSpread(b, sends, "send-s", seconds)
	reportSpread(b, fetches, "fetch-s", seconds)
	b.ReportMetric(median(sendBuilds).Seconds(), "send-build-s")
	b.ReportMetric(median(fetchBuilds).Seconds(), "fetch-build-s")
	b.ReportMetric(size/1e6, "tree-nar-MB")
	b.Logf("nix source tree %s (%.0f MB as a nar): send %v (builds %v), fetch %v (builds %v)",
		src, size/1e6, sends, sendBuilds, fetches, fetchBuilds)
}
