package integration

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"offload/integration/drv"
	"offload/integration/farm"
	"offload/sshexec"
)

// BenchmarkSourceTree: a realistic source tree (a copy of Go's own src/: about 157 MB
// in 11,500 files) sent to a machine as a build's input, and brought back as a build's
// output, through the hook; each against the bare pipeline over the same kind of ssh
// connection (uncompressed, as on loopback nothing beats that) in the same run:
// `guix archive --export | ssh machine guix archive --import` up, and
// `ssh machine guix archive --export | guix archive --import` down. BENCH_QUICK=1 takes
// src/net only.
func BenchmarkSourceTree(b *testing.B) {
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Fatalf("go env GOROOT: %v", err)
	}
	src := filepath.Join(strings.TrimSpace(string(goroot)), "src")
	if benchQuick() {
		src = filepath.Join(src, "net")
	}
	f := farm.New(b, farm.Options{Machines: 2, GuixCosts: true})
	tree := addTreeItem(b, f, "go-src", src)
	ctx := context.Background()

	// Up: the tree is the build's input.
	up := f.MakeDrv(drv.Spec{Name: "t-tree-in", Args: []string{"-c", `echo "$IN" > "$out"`},
		Env: map[string]string{"IN": tree}, InputSrcs: []string{tree}, Nonce: "tree-up"})
	m0, m1 := f.Machines[0], f.Machines[1]
	r := &sshexec.Runner{StateDir: b.TempDir()}
	tg := m1.Target()
	tg.Compression = "no"
	if err := r.RunRemote(ctx, tg, []string{"true"}, sshexec.Stdio{}); err != nil { // warm, as the hook's master is
		b.Fatal(err)
	}
	defer r.CloseMaster(tg)
	t0 := time.Now()
	pipe(b, f.HookEnv(), []string{f.Bin.FakeGuix, "archive", "--export", tree}, func(in io.Reader) error {
		return r.RunRemote(ctx, tg, []string{"guix", "archive", "--import"}, sshexec.Stdio{Stdin: in})
	})
	bareUp := time.Since(t0)
	writeMachinesText(b, f, []string{machineEntry(m0, 0, 1, "")})
	res := offloadTB(b, f, up)
	if res.answer != "accept" || res.status != 0 {
		b.Fatalf("offload up: %s %d:\n%s", res.answer, res.status, res.messages)
	}
	sent := sentRe.FindStringSubmatch(res.messages)
	if sent == nil {
		b.Fatalf("no 'sent' line:\n%s", res.messages)
	}
	upS, _ := strconv.ParseFloat(sent[3], 64)

	// Down: the build copies the tree (which machine 0 now has) into its output.
	down := f.MakeDrv(drv.Spec{Name: "t-tree-out", Args: []string{"-c", `/bin/cp -r "$FAKEGUIX_STORE/${IN##*/}" "$out"`},
		Env: map[string]string{"IN": tree}, InputSrcs: []string{tree}, Nonce: "tree-down"})
	res = offloadTB(b, f, down)
	if res.answer != "accept" || res.status != 0 {
		b.Fatalf("offload down: %s %d:\n%s", res.answer, res.status, res.messages)
	}
	got := retrievedRe.FindStringSubmatch(res.messages)
	if got == nil {
		b.Fatalf("no 'retrieved' line:\n%s", res.messages)
	}
	downS, _ := strconv.ParseFloat(got[3], 64)
	// The bare pipeline down: the same output, exported by machine 0 into a scratch
	// store of the local side.
	out := down.OutputPaths()[0]
	scratch := filepath.Join(b.TempDir(), "store")
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		b.Fatal(err)
	}
	env := append(f.HookEnv(), "FAKEGUIX_STORE="+scratch, "FAKEGUIX_DB="+filepath.Join(b.TempDir(), "db"))
	tg0 := m0.Target()
	tg0.Compression = "no"
	if err := r.RunRemote(ctx, tg0, []string{"true"}, sshexec.Stdio{}); err != nil {
		b.Fatal(err)
	}
	defer r.CloseMaster(tg0)
	imp := exec.Command(f.Bin.FakeGuix, "archive", "--import")
	imp.Env = env
	pr, pw := io.Pipe()
	imp.Stdin = pr
	t0 = time.Now()
	if err := imp.Start(); err != nil {
		b.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- imp.Wait(); pr.Close() }()
	if err := r.RunRemote(ctx, tg0, []string{"guix", "archive", "--export", out}, sshexec.Stdio{Stdout: pw}); err != nil {
		b.Fatal(err)
	}
	pw.Close()
	if err := <-errc; err != nil {
		b.Fatalf("bare import: %v", err)
	}
	bareDown := time.Since(t0)

	b.ReportMetric(upS, "up-s")
	b.ReportMetric(bareUp.Seconds(), "base-up-s")
	b.ReportMetric(downS, "down-s")
	b.ReportMetric(bareDown.Seconds(), "base-down-s")
}

// addTreeItem copies the directory src into the local store as a valid item.
func addTreeItem(b *testing.B, f *farm.Farm, name, src string) string {
	b.Helper()
	st := f.Local.Drv()
	p := drv.StorePath(st.Logical, "bench-tree:"+src, name)
	real, err := st.Real(p)
	if err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("cp", "-r", src, real).CombinedOutput(); err != nil {
		b.Fatalf("copy %s: %v: %s", src, err, out)
	}
	if err := st.Register(drv.Info{Path: p}); err != nil {
		b.Fatal(err)
	}
	return p
}

// pipe runs argv (with env) into consume, as `argv | consume`.
func pipe(b *testing.B, env, argv []string, consume func(io.Reader) error) {
	b.Helper()
	pr, pw := io.Pipe()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { pw.CloseWithError(cmd.Wait()) }()
	if err := consume(pr); err != nil {
		b.Fatal(err)
	}
}
