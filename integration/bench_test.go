package integration

// Benchmarks for issue 7 (`make bench`, scripts/bench.sh writes BENCHMARKS.md).
//
// Each benchmark measures once per run (use -benchtime 1x) and reports its figures with
// b.ReportMetric: a metric UNIT is a figure and base-UNIT, when present, the baseline
// measured in the same run; scripts/bench.sh prints both and their ratio. Nothing here
// asserts a time. BENCH_QUICK=1 (or -short) picks small sizes for development.

import (
	"bufio"
	"compress/flate"
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/farm"
	"offload/locking"
	"offload/sshexec"
	"offload/sshexec/sshtest"
	"offload/statedir"
)

func benchQuick() bool { return testing.Short() || os.Getenv("BENCH_QUICK") == "1" }

// pick returns quick in quick mode, full otherwise.
func pick[T any](full, quick T) T {
	if benchQuick() {
		return quick
	}
	return full
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sshTrueBaseline is the median time of `true` run remotely through sshexec over a warm
// shared connection to m: the cost of one ssh round trip.
func sshTrueBaseline(b *testing.B, m *farm.Machine, n int) time.Duration {
	b.Helper()
	r := &sshexec.Runner{StateDir: b.TempDir()}
	ctx := context.Background()
	tg := m.Target()
	if err := r.RunRemote(ctx, tg, []string{"true"}, sshexec.Stdio{}); err != nil {
		b.Fatal(err)
	}
	defer r.CloseMaster(tg)
	var ds []time.Duration
	for range n {
		t0 := time.Now()
		if err := r.RunRemote(ctx, tg, []string{"true"}, sshexec.Stdio{}); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t0))
	}
	return median(ds)
}

// deadPorts returns n ports on 127.0.0.1 where nothing listens (connections refused).
func deadPorts(b testing.TB, n int) []int {
	b.Helper()
	var ports []int
	for p := 41000; len(ports) < n && p < 65000; p++ {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), 200*time.Millisecond)
		if err == nil {
			c.Close()
			continue
		}
		ports = append(ports, p)
	}
	if len(ports) < n {
		b.Fatalf("found only %d free ports", len(ports))
	}
	return ports
}

// machineEntry is one build-machine form for the farm's machine m at port (m's port when
// 0): a dead port keeps m's keys so that the only thing wrong is that nobody answers.
func machineEntry(m *farm.Machine, port, parallel int, extra string) string {
	tg := m.Target()
	if port == 0 {
		port = m.Port
	}
	return fmt.Sprintf("\n (build-machine (name %q) (port %d) (user %q) (private-key %q) (host-key %q)\n  (systems (list \"x86_64-linux\")) (parallel-builds %d) (overload-threshold #f) (daemon-socket %q)%s)",
		tg.Name, port, tg.User, tg.PrivateKey, tg.HostKey, parallel, m.DaemonSocket(), extra)
}

func writeMachinesText(b testing.TB, f *farm.Farm, entries []string) {
	b.Helper()
	text := ";; written by bench_test.go\n(list" + strings.Join(entries, "") + ")\n"
	if err := os.WriteFile(f.MachinesFile(), []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
}

func startBenchHook(b testing.TB, f *farm.Farm) *daemon.Hook {
	b.Helper()
	h, err := f.StartHook(context.Background(), "x86_64-linux", 0, 0, daemon.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// timedRequest times one request line to its answer.
func timedRequest(b testing.TB, h *daemon.Hook, system, drvPath, want string) time.Duration {
	b.Helper()
	t0 := time.Now()
	ans, err := h.Request(false, system, drvPath, nil)
	d := time.Since(t0)
	if err != nil || ans != want {
		b.Fatalf("answer %q (%v), want %s: %q", ans, err, want, h.Messages())
	}
	return d
}

func stopHook(h *daemon.Hook) {
	h.Kill()
	h.Wait()
}

// BenchmarkDecision: request line to answer through the daemon driver, with 1, 10, 100
// and 1000 machines in the file of which all but one are unreachable.
func BenchmarkDecision(b *testing.B) {
	sizes := pick([]int{1, 10, 100, 1000}, []int{1, 100})
	nDecline := pick(100, 20)
	nAccept := pick(100, 5) // issue 2 asks for medians over 100 requests
	var base time.Duration
	for _, size := range sizes {
		f := farm.New(b, farm.Options{})
		m := f.Machines[0]
		if base == 0 {
			base = sshTrueBaseline(b, m, pick(100, 20))
		}
		entries := []string{machineEntry(m, 0, 1, "")}
		for _, p := range deadPorts(b, size-1) {
			entries = append(entries, machineEntry(m, p, 1, ""))
		}
		writeMachinesText(b, f, entries)
		d := okDrv(f, "decide")
		report := func(b *testing.B, ds []time.Duration) {
			b.ReportMetric(ms(ds[0]), "first-ms")
			b.ReportMetric(ms(median(ds)), "median-ms")
			b.ReportMetric(ms(base), "base-median-ms")
		}

		b.Run(fmt.Sprintf("decline/machines=%d", size), func(b *testing.B) {
			h := startBenchHook(b, f)
			defer stopHook(h)
			var ds []time.Duration
			for range nDecline {
				ds = append(ds, timedRequest(b, h, "mips64el-linux", d.Path, "decline"))
			}
			report(b, ds)
		})
		b.Run(fmt.Sprintf("accept/machines=%d", size), func(b *testing.B) {
			var ds []time.Duration
			for range nAccept {
				h := startBenchHook(b, f)
				time.Sleep(100 * time.Millisecond) // let it start: we time the decision, not exec
				ds = append(ds, timedRequest(b, h, d.System, d.Path, "accept"))
				stopHook(h) // frees the slot
			}
			report(b, ds)
		})
		b.Run(fmt.Sprintf("postpone/machines=%d", size), func(b *testing.B) {
			slot, _, err := locking.AcquireSlot(slotDir(f, m), 1, "bench: holding every slot")
			if err != nil || slot == nil {
				b.Fatalf("hold the slot: %v", err)
			}
			defer slot.Release()
			// And the place in its queue, so that the answer is a postpone.
			queued, _, err := locking.AcquireSlot(statedir.Layout{Dir: filepath.Join(f.State, "offload")}.Queue(m.Name+":"+strconv.Itoa(m.Port)), 1, "bench: holding the queue")
			if err != nil || queued == nil {
				b.Fatalf("hold the queue place: %v", err)
			}
			defer queued.Release()
			h := startBenchHook(b, f)
			defer stopHook(h)
			var ds []time.Duration
			for range nDecline {
				ds = append(ds, timedRequest(b, h, d.System, d.Path, "postpone"))
			}
			report(b, ds)
		})
		r := &sshexec.Runner{StateDir: filepath.Join(f.State, "offload")}
		r.CloseMaster(m.Target())
	}
}

// BenchmarkStartup: a whole `offload --version`, and a whole hook process that answers
// one decline and exits, against exec of /bin/true.
func BenchmarkStartup(b *testing.B) {
	f := farm.New(b, farm.Options{})
	writeMachines(f, nil)
	d := okDrv(f, "start")
	n := pick(100, 20)
	run := func(argv ...string) time.Duration {
		t0 := time.Now()
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%q: %v: %s", argv, err, out)
		}
		return time.Since(t0)
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Fatal(err)
	}
	var base []time.Duration
	for range n {
		base = append(base, run(truePath))
	}
	b.Run("version", func(b *testing.B) {
		var ds []time.Duration
		for range n {
			ds = append(ds, run(f.Bin.Offload, "--version"))
		}
		b.ReportMetric(ms(median(ds)), "median-ms")
		b.ReportMetric(ms(median(base)), "base-median-ms")
	})
	b.Run("decline", func(b *testing.B) {
		var ds []time.Duration
		for range n {
			t0 := time.Now()
			h := startBenchHook(b, f)
			if ans, err := h.Request(false, "mips64el-linux", d.Path, nil); err != nil || ans != "decline" {
				b.Fatalf("%q %v", ans, err)
			}
			h.CloseStdin()
			if st, _, err := h.Wait(); err != nil || st != 0 {
				b.Fatalf("hook exited %d: %v", st, err)
			}
			ds = append(ds, time.Since(t0))
		}
		b.ReportMetric(ms(median(ds)), "median-ms")
		b.ReportMetric(ms(median(base)), "base-median-ms")
	})
}

// randomReader is fast pseudo-random data, so that ssh compression cannot shrink it.
func randomReader(seed uint64) io.Reader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return mrand.NewChaCha8(s)
}

// addRandomItem creates a valid local item holding files pseudo-random files of size
// bytes each (a single file when files is 1 and flat), without holding them in memory.
func addRandomItem(b testing.TB, f *farm.Farm, name string, seed uint64, files int, size int64) string {
	b.Helper()
	return addItemFrom(b, f, name, fmt.Sprintf("%d", seed), randomReader(seed), files, size)
}

// addItemFrom is addRandomItem with the files' bytes read from src; key tells items of
// the same name apart.
func addItemFrom(b testing.TB, f *farm.Farm, name, key string, src io.Reader, files int, size int64) string {
	b.Helper()
	st := f.Local.Drv()
	p := drv.StorePath(st.Logical, fmt.Sprintf("bench:%s:%s:%d:%d", name, key, files, size), name)
	real, err := st.Real(p)
	if err != nil {
		b.Fatal(err)
	}
	tmp, err := os.MkdirTemp(st.Physical, ".bench-item-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "item")
	if err := writeTree(root, src, files, size); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(root, real); err != nil {
		b.Fatal(err)
	}
	if err := st.Register(drv.Info{Path: p}); err != nil {
		b.Fatal(err)
	}
	return p
}

// writeRandomTree writes files files of size random bytes under root, 100 per
// subdirectory; files == 0 makes root itself one regular file of size bytes.
func writeRandomTree(root string, seed uint64, files int, size int64) error {
	return writeTree(root, randomReader(seed), files, size)
}

// writeTree is writeRandomTree with the bytes read from rnd.
func writeTree(root string, rnd io.Reader, files int, size int64) error {
	write := func(name string) error {
		w, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o444)
		if err != nil {
			return err
		}
		_, err = io.CopyN(w, rnd, size)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		return err
	}
	if files == 0 {
		return write(root)
	}
	for i := range files {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", i/100))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := write(filepath.Join(dir, fmt.Sprintf("f%05d", i))); err != nil {
			return err
		}
	}
	return nil
}

// The hook's lines after each transfer: items, MiB on the wire (then what it was
// compressed with, and the size before), seconds.
var (
	sentRe      = regexp.MustCompile(`sent (\d+) store items? \(([0-9.]+) MiB[^)]*\) to '[^']*' in ([0-9.]+)s`)
	retrievedRe = regexp.MustCompile(`retrieved (\d+) store items? \(([0-9.]+) MiB[^)]*\) from '[^']*' in ([0-9.]+)s`)
)

// BenchmarkTransfer: a whole offload of a derivation with a big input closure against
// the bare `guix archive --export | ssh host guix archive --import` pipeline (the
// stand-in on both sides, the same sshd options and compression as the hook uses), each
// into a machine that has none of the inputs.
func BenchmarkTransfer(b *testing.B) {
	type shape struct {
		name         string
		items, files int
		size         int64
	}
	shapes := pick(
		[]shape{{"200MB-2000files", 20, 100, 100_000}, {"1GB-4files", 4, 0, 250_000_000}},
		[]shape{{"20MB-200files", 4, 50, 100_000}, {"100MB-2files", 2, 0, 50_000_000}},
	)
	for _, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			f := farm.New(b, farm.Options{Machines: 2})
			var inputs []string
			for i := range sh.items {
				inputs = append(inputs, addRandomItem(b, f, fmt.Sprintf("blob%d", i), uint64(i+1), sh.files, sh.size))
			}
			d := f.MakeDrv(drv.Spec{
				Name:      "t-big",
				Args:      []string{"-c", `echo "$IN" > "$out"`},
				Env:       map[string]string{"IN": strings.Join(inputs, " ")},
				InputSrcs: inputs,
				Nonce:     sh.name,
			})
			// The bare pipeline, into machine 1.
			m1 := f.Machines[1]
			tg := m1.Target()
			tg.Compression = "zlib@openssh.com,zlib" // machines.scm's default, which the hook uses
			r := &sshexec.Runner{StateDir: b.TempDir()}
			ctx := context.Background()
			if err := r.RunRemote(ctx, tg, []string{"true"}, sshexec.Stdio{}); err != nil { // warm, like the hook's master
				b.Fatal(err)
			}
			defer r.CloseMaster(tg)
			all, err := f.Local.Drv().BuildInputs(d)
			if err != nil {
				b.Fatal(err)
			}
			pr, pw := io.Pipe()
			exp := exec.Command(f.Bin.FakeGuix, append([]string{"archive", "--export"}, all...)...)
			exp.Env = f.HookEnv()
			exp.Stdout = pw
			cr := &byteCounter{r: pr}
			t0 := time.Now()
			if err := exp.Start(); err != nil {
				b.Fatal(err)
			}
			go func() { pw.CloseWithError(exp.Wait()) }()
			if err := r.RunRemote(ctx, tg, []string{"guix", "archive", "--import"}, sshexec.Stdio{Stdin: cr}); err != nil {
				b.Fatal(err)
			}
			bare := time.Since(t0)

			// The hook, into machine 0 alone.
			writeMachinesText(b, f, []string{machineEntry(f.Machines[0], 0, 1, "")})
			t0 = time.Now()
			res := offloadTB(b, f, d)
			whole := time.Since(t0)
			if res.answer != "accept" || res.status != 0 {
				b.Fatalf("offload: %s %d:\n%s", res.answer, res.status, res.messages)
			}
			sent := sentRe.FindStringSubmatch(res.messages)
			if sent == nil {
				b.Fatalf("no 'sent N store items' line:\n%s", res.messages)
			}
			mib, _ := strconv.ParseFloat(sent[2], 64)
			upload, _ := strconv.ParseFloat(sent[3], 64)
			b.ReportMetric(whole.Seconds(), "whole-offload-s")
			b.ReportMetric(bare.Seconds(), "base-whole-offload-s")
			b.ReportMetric(upload, "upload-s")
			b.ReportMetric(bare.Seconds(), "base-upload-s")
			b.ReportMetric(mib*1.048576, "wire-MB")
			b.ReportMetric(float64(cr.n)/1e6, "base-wire-MB")
		})
	}
	// Compression on the wire (hook/compress.go): each OFFLOAD_COMPRESSION mode on
	// incompressible and on compressible data, against "ssh" (ssh's zlib, as before).
	files, size := pick(2000, 200), int64(100_000)
	b.Run("modes-random", func(b *testing.B) { transferModes(b, randomReader(42), files, size) })
	b.Run("modes-usr", func(b *testing.B) {
		src, err := usrReader()
		if err != nil {
			b.Fatal(err)
		}
		transferModes(b, src, files, size)
	})
}

// transferModes offloads, once per compression mode, a derivation whose input closure
// is files files of size bytes read from src (in 20 items) and whose output is a copy
// of it, each mode to a machine of its own that lacks everything, and reports the
// upload and download times (the hook's own "sent" and "retrieved" lines), the whole
// offload and the MB on the wire each way, against mode "ssh" in the same run.
func transferModes(b *testing.B, src io.Reader, files int, size int64) {
	modes := []string{"ssh", "none", "gzip", "zstd"}
	f := farm.New(b, farm.Options{Machines: len(modes)})
	const items = 20
	var inputs []string
	for i := range items {
		inputs = append(inputs, addItemFrom(b, f, fmt.Sprintf("blob%d", i), "modes", src, files/items, size))
	}
	type figures struct{ up, down, whole, upMB, downMB float64 }
	var base figures
	for i, mode := range modes {
		b.Run(mode, func(b *testing.B) {
			d := f.MakeDrv(drv.Spec{
				Name:      "t-copy",
				Args:      []string{"-c", `/bin/mkdir "$out" && for i in $IN; do /bin/cp -r "$FAKEGUIX_STORE/${i##*/}" "$out/"; done`},
				Env:       map[string]string{"IN": strings.Join(inputs, " ")},
				InputSrcs: inputs,
				Nonce:     "modes-" + mode,
			})
			writeMachinesText(b, f, []string{machineEntry(f.Machines[i], 0, 1, "")})
			t0 := time.Now()
			res := offloadTB(b, f, d, "OFFLOAD_COMPRESSION="+mode)
			whole := time.Since(t0)
			if res.answer != "accept" || res.status != 0 {
				b.Fatalf("offload: %s %d:\n%s", res.answer, res.status, res.messages)
			}
			sent, got := sentRe.FindStringSubmatch(res.messages), retrievedRe.FindStringSubmatch(res.messages)
			if sent == nil || got == nil || !strings.Contains(res.messages, "("+mode+")...") {
				b.Fatalf("no 'sent' and 'retrieved' lines, or not with %s:\n%s", mode, res.messages)
			}
			num := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
			fig := figures{up: num(sent[3]), down: num(got[3]), whole: whole.Seconds(),
				upMB: num(sent[2]) * 1.048576, downMB: num(got[2]) * 1.048576}
			if mode == "ssh" {
				base = fig
				// What ssh's zlib (deflate level 6) makes of the upload: its bytes on
				// the wire, which the hook cannot see.
				all, err := f.Local.Drv().BuildInputs(d)
				if err != nil {
					b.Fatal(err)
				}
				exp := exec.Command(f.Bin.FakeGuix, append([]string{"archive", "--export"}, all...)...)
				exp.Env = f.HookEnv()
				out, err := exp.StdoutPipe()
				if err != nil {
					b.Fatal(err)
				}
				if err := exp.Start(); err != nil {
					b.Fatal(err)
				}
				cw := &countWriter{}
				zw, _ := flate.NewWriter(cw, 6)
				if _, err := io.Copy(zw, out); err != nil {
					b.Fatal(err)
				}
				zw.Close()
				if err := exp.Wait(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(cw.n)/1e6, "zlib6-up-MB")
			}
			b.Logf("%s: %s", mode, lineWith(res.messages, "sent "))
			b.Logf("%s: %s", mode, lineWith(res.messages, "retrieved "))
			b.ReportMetric(fig.up, "upload-s")
			b.ReportMetric(base.up, "base-upload-s")
			b.ReportMetric(fig.down, "download-s")
			b.ReportMetric(base.down, "base-download-s")
			b.ReportMetric(fig.whole, "whole-offload-s")
			b.ReportMetric(base.whole, "base-whole-offload-s")
			b.ReportMetric(fig.upMB, "up-wire-MB")
			b.ReportMetric(base.upMB, "base-up-wire-MB")
			b.ReportMetric(fig.downMB, "down-wire-MB")
			b.ReportMetric(base.downMB, "base-down-wire-MB")
		})
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// usrReader reads the regular files of /usr/bin and /usr/share, one from each in
// turn, over and over: real programs and text (with the odd compressed man page), as
// store items hold.
func usrReader() (io.Reader, error) {
	var lists [2][]string
	for i, dir := range []string{"/usr/bin", "/usr/share"} {
		filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				lists[i] = append(lists[i], p)
			}
			return nil
		})
	}
	if len(lists[0]) == 0 || len(lists[1]) == 0 {
		return nil, fmt.Errorf("no files under /usr/bin or /usr/share")
	}
	return &filesReader{lists: lists}, nil
}

// filesReader is usrReader's reader.
type filesReader struct {
	lists [2][]string
	n     int
	cur   *os.File
}

func (r *filesReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			list := r.lists[r.n%2]
			f, err := os.Open(list[(r.n/2)%len(list)])
			r.n++
			if err != nil {
				continue
			}
			r.cur = f
		}
		n, err := r.cur.Read(p)
		if n > 0 {
			return n, nil
		}
		r.cur.Close()
		r.cur = nil
		if err != nil && err != io.EOF {
			continue
		}
	}
}

// offloadTB is offload() for benchmarks and drills: one request through a fresh hook
// and, when accepted, the whole build.
func offloadTB(tb testing.TB, f *farm.Farm, d *drv.Derivation, env ...string) result {
	tb.Helper()
	h, err := daemon.StartWith(context.Background(), f.HookArgv("x86_64-linux", 0, true, 0), append(f.HookEnv(), env...), daemon.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Kill()
	ans, err := h.Request(false, d.System, d.Path, d.Features())
	if err != nil {
		tb.Fatalf("request: %v (messages: %q)", err, h.Messages())
	}
	r := result{answer: ans, hook: h}
	if ans == "accept" {
		if err := f.SendPaths(h, d); err != nil {
			tb.Fatal(err)
		}
	} else if err := h.CloseStdin(); err != nil {
		tb.Fatal(err)
	}
	r.status, r.signaled, err = h.Wait()
	if err != nil {
		tb.Fatal(err)
	}
	r.messages = strings.Join(h.Messages(), "\n")
	r.log = string(h.Log())
	return r
}

type byteCounter struct {
	r io.Reader
	n int64
}

func (c *byteCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// runMeasured runs argv with stdin from file in and returns its wall time and peak RSS.
func runMeasured(b testing.TB, in string, argv ...string) (time.Duration, int64) {
	b.Helper()
	f, err := os.Open(in)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = f
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%q: %v: %s", argv, err, stderr.String())
	}
	d := time.Since(t0)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return d, ru.Maxrss * 1024
}

// BenchmarkRestore: `offload archive restore` (storeio.Restore) against `nix-store
// --restore` on the same nars, each a separate process: throughput and peak RSS.
func BenchmarkRestore(b *testing.B) {
	nixStore := sshtest.NeedTool(b, "nix-store")
	f := farm.New(b, farm.Options{}) // for the offload binary
	type shape struct {
		name  string
		files int
		size  int64
	}
	shapes := pick(
		[]shape{{"1GiB-32768files", 32768, 32 << 10}, {"1GiB-onefile", 0, 1 << 30}},
		[]shape{{"64MiB-2048files", 2048, 32 << 10}, {"64MiB-onefile", 0, 64 << 20}},
	)
	for i, sh := range shapes {
		b.Run(sh.name, func(b *testing.B) {
			dir := b.TempDir()
			src := filepath.Join(dir, "src")
			if err := writeRandomTree(src, uint64(100+i), sh.files, sh.size); err != nil {
				b.Fatal(err)
			}
			nar := filepath.Join(dir, "nar")
			out, err := os.Create(nar)
			if err != nil {
				b.Fatal(err)
			}
			dump := exec.Command(nixStore, "--dump", src)
			dump.Stdout = out
			if err := dump.Run(); err != nil {
				b.Fatal(err)
			}
			out.Close()
			os.RemoveAll(src)
			st, _ := os.Stat(nar)
			mb := float64(st.Size()) / 1e6
			syncDisk := func() { exec.Command("sync").Run() }

			syncDisk()
			ours, oursRSS := runMeasured(b, nar, f.Bin.Offload, "archive", "restore", filepath.Join(dir, "ours"))
			os.RemoveAll(filepath.Join(dir, "ours"))
			syncDisk()
			theirs, theirsRSS := runMeasured(b, nar, nixStore, "--restore", filepath.Join(dir, "theirs"))
			os.RemoveAll(filepath.Join(dir, "theirs"))
			b.ReportMetric(mb/ours.Seconds(), "MB/s")
			b.ReportMetric(mb/theirs.Seconds(), "base-MB/s")
			b.ReportMetric(float64(oursRSS)/1e6, "rss-MB")
			b.ReportMetric(float64(theirsRSS)/1e6, "base-rss-MB")
		})
	}
}

// peakRSS polls the VmHWM of pid until it exits and returns the last value seen.
func peakRSS(pid int, stop <-chan struct{}) int64 {
	var peak int64
	for {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
					peak = max(peak, kb*1024)
				}
			}
		}
		select {
		case <-stop:
			return peak
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// BenchmarkConcurrency: 50 requests at once against 3 machines with parallel-builds 2,
// each build sleeping; postponed requests are asked again every 200 ms on the same hook,
// as the daemon does. The builders log start and end; the maximum overlap per machine
// must never exceed 2 (that is checked, it is not a time).
func BenchmarkConcurrency(b *testing.B) {
	const machinesN, parallel = 3, 2
	n := pick(50, 12)
	secs := pick(2, 1)
	f := farm.New(b, farm.Options{Machines: machinesN, ParallelBuilds: parallel})
	writeMachines(f, nil)
	events := filepath.Join(f.Dir, "events")
	var drvs []*drv.Derivation
	for i := range n {
		nonce := fmt.Sprintf("c%02d", i)
		drvs = append(drvs, f.MakeDrv(drv.Spec{
			Name: "t-conc",
			Args: []string{"-c", `echo "start $NONCE $(date +%s.%N)" >> "$EVENTS"; sleep ` + strconv.Itoa(secs) +
				`; echo "end $NONCE $(date +%s.%N)" >> "$EVENTS"; echo ok > "$out"`},
			Env:   map[string]string{"NONCE": nonce, "EVENTS": events},
			Nonce: nonce,
		}))
	}
	machineOf := make([]string, n)
	rss := make([]int64, n)
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var failures []string
	t0 := time.Now()
	for i, d := range drvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(format string, args ...any) {
				failMu.Lock()
				failures = append(failures, fmt.Sprintf("%s: ", d.Path)+fmt.Sprintf(format, args...))
				failMu.Unlock()
			}
			h, err := f.StartHook(context.Background(), "x86_64-linux", 0, 0, daemon.Options{})
			if err != nil {
				fail("%v", err)
				return
			}
			defer h.Kill()
			stop := make(chan struct{})
			rssDone := make(chan int64, 1)
			go func() { rssDone <- peakRSS(h.Pid(), stop) }()
			for {
				ans, err := f.Request(h, d)
				if err != nil {
					fail("request: %v", err)
					close(stop)
					return
				}
				if ans == "accept" {
					break
				}
				if ans != "postpone" {
					fail("answer %s", ans)
					close(stop)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err := f.SendPaths(h, d); err != nil {
				fail("%v", err)
			}
			st, _, err := h.Wait()
			close(stop)
			rss[i] = <-rssDone
			if err != nil || st != 0 {
				fail("hook exited %d (%v): %q", st, err, h.Messages())
			}
			for _, l := range h.Messages() {
				if rest, ok := strings.CutPrefix(l, "@ build-remote "+d.Path+" "); ok {
					machineOf[i] = rest
				}
			}
		}()
	}
	wg.Wait()
	all := time.Since(t0)
	if len(failures) > 0 {
		b.Fatalf("%d requests failed:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	// Overlap per machine from the builders' own start/end lines.
	type ev struct {
		at    float64
		delta int
	}
	byNonce := map[string]string{}
	for i := range drvs {
		byNonce[fmt.Sprintf("c%02d", i)] = machineOf[i]
	}
	perMachine := map[string][]ev{}
	fh, err := os.Open(events)
	if err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) != 3 {
			continue
		}
		at, _ := strconv.ParseFloat(w[2], 64)
		delta := 1
		if w[0] == "end" {
			delta = -1
		}
		mach := byNonce[w[1]]
		perMachine[mach] = append(perMachine[mach], ev{at, delta})
	}
	fh.Close()
	maxConc := map[string]int{}
	for mach, evs := range perMachine {
		slices.SortFunc(evs, func(a, c ev) int {
			if a.at != c.at {
				if a.at < c.at {
					return -1
				}
				return 1
			}
			return a.delta - c.delta // an end before a start at the same instant
		})
		cur := 0
		for _, e := range evs {
			cur += e.delta
			maxConc[mach] = max(maxConc[mach], cur)
		}
	}
	for mach, c := range maxConc {
		if c > parallel {
			b.Errorf("machine %s ran %d builds at once, more than parallel-builds %d", mach, c, parallel)
		}
	}
	if len(maxConc) != machinesN {
		b.Errorf("builds went to %d machines, want %d: %v", len(maxConc), machinesN, maxConc)
	}
	waves := (n + machinesN*parallel - 1) / (machinesN * parallel)
	b.ReportMetric(all.Seconds(), "all-done-s")
	b.ReportMetric(float64(waves*secs), "base-all-done-s")
	worst := 0
	for _, c := range maxConc {
		worst = max(worst, c)
	}
	b.ReportMetric(float64(worst), "max-concurrent-per-machine")
	b.ReportMetric(float64(parallel), "base-max-concurrent-per-machine")
	b.ReportMetric(float64(slices.Max(rss))/1e6, "hook-peak-rss-MB")
	// Baseline: the same reading of a hook that has only answered one decline.
	idle := startBenchHook(b, f)
	if ans, err := idle.Request(false, "mips64el-linux", drvs[0].Path, nil); err != nil || ans != "decline" {
		b.Fatalf("idle hook: %q %v", ans, err)
	}
	stop := make(chan struct{})
	close(stop)
	b.ReportMetric(float64(peakRSS(idle.Pid(), stop))/1e6, "base-hook-peak-rss-MB")
	stopHook(idle)
	b.Logf("max concurrent per machine: %v", maxConc)
}

// slowShell makes the shell start-up of m's remote user sleep delay more for every
// ssh command, as a heavy ~/.bashrc does (Debian's bash, started by sshd for a
// command, sources ~/.bashrc: SSH_SOURCE_BASHRC, and then not BASH_ENV). The test
// machines log in as the user running the tests, whose ~/.bashrc is not ours to
// change, so the sleep comes from sshd's ForceCommand, which the user's shell runs
// after its start-up files: it sleeps, then runs the command as sshd would have, with
// the user's shell. extra are more K=V for the sessions' environment. sshd is
// restarted with them.
func slowShell(b testing.TB, m *farm.Machine, delay time.Duration, extra ...string) {
	b.Helper()
	shell := os.Getenv("SHELL")
	if u, err := user.Current(); err == nil {
		if sh, err := loginShell(u.Username); err == nil {
			shell = sh
		}
	}
	if shell == "" {
		shell = "/bin/sh"
	}
	wrapper := filepath.Join(m.Dir, "slow-shell-startup")
	body := fmt.Sprintf("#!/bin/sh\nsleep %.3f\nexec %s -c \"$SSH_ORIGINAL_COMMAND\"\n", delay.Seconds(), shell)
	if err := os.WriteFile(wrapper, []byte(body), 0o755); err != nil {
		b.Fatal(err)
	}
	cfg := filepath.Join(m.Server.Dir, "sshd_config")
	text, err := os.ReadFile(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(string(text), "\n"), "\n") {
		if strings.HasPrefix(l, "SetEnv ") {
			for _, kv := range extra {
				l += ` "` + kv + `"`
			}
		}
		out = append(out, l)
	}
	out = append(out, "ForceCommand "+wrapper)
	if err := os.WriteFile(cfg, []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	m.Server.Restart(b)
}

// loginShell is user's shell in /etc/passwd.
func loginShell(name string) (string, error) {
	b, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, ":"); len(f) == 7 && f[0] == name {
			return f[6], nil
		}
	}
	return "", fmt.Errorf("no %s in /etc/passwd", name)
}

// BenchmarkTinyOffload: a tiny build (`echo hello > $out`, whose .drv the machine
// lacks) offloaded end to end, probe included, to a machine whose shell start-up
// sleeps 100 ms (slowShell), with stand-ins that cost what Guix costs (each `guix`
// command its Guile start, the daemon's signing helper once per connection), on the
// daemon path and on the shell path (OFFLOAD_PATH=shell), against `ssh machine true`
// through sshexec over a warm shared connection to the same machine in the same run.
// Also per offload: the ssh sessions sshd started (its log), and the `guix` processes
// run on the machine and here (the stand-ins' logs): each is a Guile start on a real
// machine.
func BenchmarkTinyOffload(b *testing.B) {
	n := pick(20, 5)
	for _, path := range []string{"daemon", "shell"} {
		b.Run(path+"-path", func(b *testing.B) {
			f := farm.New(b, farm.Options{GuixCosts: true})
			m := f.Machines[0]
			// A daemon's state directory has gcroots, which root may write in.
			if err := os.MkdirAll(filepath.Join(m.GuixStateDir(), "gcroots"), 0o755); err != nil {
				b.Fatal(err)
			}
			slowShell(b, m, 100*time.Millisecond)
			writeMachines(f, nil)
			base := sshTrueBaseline(b, m, n)
			stateFile := filepath.Join(f.State, "offload", m.StateKey()+".state")
			var walls []time.Duration
			sessions, guixes, localGuixes := 0, 0, 0
			for i := range n {
				// As in Guix, the builder is a script the derivation takes as input, a text
				// item made fresh for each build (gexp->derivation's NAME-builder).
				script, err := f.Local.Drv().AddText(fmt.Sprintf("t-tiny-%d-builder", i), "echo hello > \"$out\"\n", nil)
				if err != nil {
					b.Fatal(err)
				}
				d := f.MakeDrv(drv.Spec{Name: "t-tiny", Args: []string{"-e", script}, InputSrcs: []string{script}, Nonce: fmt.Sprintf("tiny%d", i)})
				// No cached probe: every offload probes, as one every 5 s would.
				if err := os.Remove(stateFile); err != nil && !os.IsNotExist(err) {
					b.Fatal(err)
				}
				s0, g0, l0 := strings.Count(m.Server.Log(), "Starting session:"), len(m.Invocations()), len(f.LocalInvocations())
				t0 := time.Now()
				res := offloadTB(b, f, d, "OFFLOAD_PATH="+path)
				walls = append(walls, time.Since(t0))
				if res.answer != "accept" || res.status != 0 {
					b.Fatalf("offload: %s %d:\n%s", res.answer, res.status, res.messages)
				}
				sessions += strings.Count(m.Server.Log(), "Starting session:") - s0
				guixes += len(m.Invocations()) - g0
				localGuixes += len(f.LocalInvocations()) - l0
			}
			b.ReportMetric(ms(median(walls)), "wall-ms")
			b.ReportMetric(ms(base), "base-wall-ms")
			b.ReportMetric(float64(sessions)/float64(n), "ssh-sessions/offload")
			b.ReportMetric(float64(guixes)/float64(n), "remote-guix/offload")
			b.ReportMetric(float64(localGuixes)/float64(n), "local-guix/offload")
			b.Logf("ssh true: %s; offload: median %s, sessions %.1f, guix runs %.1f there and %.1f here per offload",
				base, median(walls), float64(sessions)/float64(n), float64(guixes)/float64(n), float64(localGuixes)/float64(n))
		})
	}
}

// BenchmarkLocalSigning: how the local export of inputs is signed, with the stand-ins'
// Guix costs. Each offload sends a fresh 1 MiB item (a signed bundle). wall-ms: the
// local daemon signs (the hook cannot read the host's key: its configuration directory
// lacks it, as for a hook not run as the daemon's user), which starts the daemon's
// signing helper once per connection; baseline: the hook signs with the key it read
// (the default when it runs as the daemon's user). The two alternate run by run.
func BenchmarkLocalSigning(b *testing.B) {
	n := pick(9, 3)
	f := farm.New(b, farm.Options{GuixCosts: true})
	writeMachines(f, nil)
	// The hook's configuration without the key: the same ACL and machines file.
	noKey := filepath.Join(f.Dir, "conf-without-key")
	if err := os.MkdirAll(noKey, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"acl", "machines.scm"} {
		data, err := os.ReadFile(filepath.Join(f.Local.Conf, name))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(noKey, name), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	var hook, daemonSigned []time.Duration
	for i := range n {
		for _, byDaemon := range []bool{false, true} {
			nonce := fmt.Sprintf("sign%d-%v", i, byDaemon)
			in := addRandomItem(b, f, "sign-input", uint64(100+2*i+len(nonce)), 0, 1<<20)
			d := f.MakeDrv(drv.Spec{Name: "t-sign", Args: []string{"-c", `test -e "$IN" && echo ok > "$out"`},
				Env: map[string]string{"IN": in}, InputSrcs: []string{in}, Nonce: nonce})
			var env []string
			if byDaemon {
				env = append(env, "GUIX_CONFIGURATION_DIRECTORY="+noKey)
			}
			t0 := time.Now()
			r := offloadTB(b, f, d, env...)
			wall := time.Since(t0)
			if r.answer != "accept" || r.status != 0 {
				b.Fatalf("offload: %s %d:\n%s", r.answer, r.status, r.messages)
			}
			if byDaemon {
				daemonSigned = append(daemonSigned, wall)
			} else {
				hook = append(hook, wall)
			}
		}
	}
	b.ReportMetric(ms(median(daemonSigned)), "wall-ms")
	b.ReportMetric(ms(median(hook)), "base-wall-ms")
	b.Logf("signed by the local daemon: %v; by the hook: %v", daemonSigned, hook)
}
