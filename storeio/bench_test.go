package storeio

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// restoreHelperEnv makes the test binary act as a plain "restore stdin into DIR"
// program, so benchmarks can measure our peak memory the same way as nix-store's.
const restoreHelperEnv = "STOREIO_RESTORE_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(restoreHelperEnv); dir != "" {
		if err := Restore(os.Stdin, dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchSize is the nar size benchmarks use: $STOREIO_BENCH_MB MiB (default 64; the
// issue's note uses 1024).
func benchSize(b *testing.B) int64 {
	mb := int64(64)
	if s := os.Getenv("STOREIO_BENCH_MB"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		mb = v
	}
	return mb << 20
}

// writeBenchNar streams a nar straight to a file (no tree needed): many small files
// (fileSize > 0, 256 per directory) or one file of total bytes.
func writeBenchNar(b testing.TB, path string, total int64, fileSize int) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	nb := &wireWriter{w: w}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*7 + i>>8)
	}
	contents := func(n int64) {
		nb.writeInt(uint64(n))
		for left := n; left > 0; {
			k := min(left, int64(len(chunk)))
			nb.Write(chunk[:k])
			left -= k
		}
		nb.writePadding(uint64(n))
	}
	nb.writeString(narMagic)
	if fileSize == 0 {
		nb.writeStrings("(", "type", "regular", "contents")
		contents(total)
		nb.writeString(")")
	} else {
		files := total / int64(fileSize)
		nb.writeStrings("(", "type", "directory")
		for d := int64(0); d*256 < files; d++ {
			nb.writeStrings("entry", "(", "name", fmt.Sprintf("d%06d", d), "node", "(", "type", "directory")
			for i := d * 256; i < min(files, (d+1)*256); i++ {
				nb.writeStrings("entry", "(", "name", fmt.Sprintf("f%06d", i), "node", "(", "type", "regular", "contents")
				contents(int64(fileSize - int(i%97))) // sizes that are not multiples of 8
				nb.writeStrings(")", ")")
			}
			nb.writeStrings(")", ")")
		}
		nb.writeString(")")
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
}

// restoreBench restores the nar at narPath with prog (our helper or nix-store) b.N
// times, reporting throughput and the child's peak RSS.
func restoreBench(b *testing.B, narPath string, nix bool) {
	fi, err := os.Stat(narPath)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	work := benchDir(b)
	var maxRSS int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out := filepath.Join(work, fmt.Sprintf("out%d", i))
		var cmd *exec.Cmd
		if nix {
			cmd = exec.Command(nixStore(b), "--restore", out)
		} else {
			cmd = exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), restoreHelperEnv+"="+out)
		}
		in, err := os.Open(narPath)
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stdin = in
		if o, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, o)
		}
		in.Close()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > maxRSS {
			maxRSS = ru.Maxrss
		}
		b.StopTimer()
		removeTree(out)
		b.StartTimer()
	}
	b.ReportMetric(float64(maxRSS)/1024, "peak-RSS-MiB")
}

// benchDir is where benchmarks write: $STOREIO_BENCH_DIR (e.g. a tmpfs, to measure
// the restorer rather than the disk) or a test temporary directory.
func benchDir(b *testing.B) string {
	if d := os.Getenv("STOREIO_BENCH_DIR"); d != "" {
		d, err := os.MkdirTemp(d, "storeio-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { removeTree(d) })
		return d
	}
	return b.TempDir()
}

func benchNar(b *testing.B, fileSize int) string {
	p := filepath.Join(benchDir(b), "bench.nar")
	writeBenchNar(b, p, benchSize(b), fileSize)
	return p
}

func BenchmarkRestoreManySmall(b *testing.B) {
	nar := benchNar(b, 4096)
	b.Run("offload", func(b *testing.B) { restoreBench(b, nar, false) })
	b.Run("nix-store", func(b *testing.B) { restoreBench(b, nar, true) })
}

func BenchmarkRestoreLarge(b *testing.B) {
	nar := benchNar(b, 0)
	b.Run("offload", func(b *testing.B) { restoreBench(b, nar, false) })
	b.Run("nix-store", func(b *testing.B) { restoreBench(b, nar, true) })
}

// BenchmarkRestoreInProcess measures Restore alone (no process start), with allocations.
func BenchmarkRestoreInProcess(b *testing.B) {
	nar := benchNar(b, 4096)
	fi, _ := os.Stat(nar)
	b.SetBytes(fi.Size())
	b.ReportAllocs()
	work := benchDir(b)
	for i := 0; i < b.N; i++ {
		in, _ := os.Open(nar)
		out := filepath.Join(work, fmt.Sprint(i))
		if err := Restore(in, out); err != nil {
			b.Fatal(err)
		}
		in.Close()
		b.StopTimer()
		removeTree(out)
		b.StartTimer()
	}
}

func TestBenchNarIsValid(t *testing.T) {
	// The benchmarks' generated nars must be valid, or they would measure refusals.
	dir := t.TempDir()
	for _, fs := range []int{0, 100} {
		p := filepath.Join(dir, fmt.Sprint(fs))
		writeBenchNar(t, p, 300<<10, fs)
		in, _ := os.Open(p)
		if err := Restore(in, p+".out"); err != nil {
			t.Fatal(err)
		}
		in.Close()
	}
}
