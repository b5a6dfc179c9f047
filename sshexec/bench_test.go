package sshexec_test

import (
	"context"
	"io"
	"os/exec"
	"sort"
	"strconv"
	"testing"
	"time"

	"offload/sshexec"
)

// Measurements for the note, run by hand:
//
//	go test -run '^$' -bench 'True' -benchtime 100x ./sshexec/
//	go test -run '^$' -bench 'Stream' -benchtime 1x ./sshexec/
//
// They report the median of the runs besides Go's mean.

func benchTrue(b *testing.B, persist time.Duration) {
	s, r := setup(b)
	r.ControlPersist = persist
	m := s.Target()
	ctx := context.Background()
	if err := r.RunRemote(ctx, m, []string{"true"}, sshexec.Stdio{}); err != nil { // warm up (master, pinned key)
		b.Fatal(err)
	}
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := r.RunRemote(ctx, m, []string{"true"}, sshexec.Stdio{}); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t0))
	}
	b.StopTimer()
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
}

func BenchmarkTrueWarm(b *testing.B)     { benchTrue(b, 0) }
func BenchmarkTrueUnshared(b *testing.B) { benchTrue(b, -1) }

const streamSize = 1 << 30

// BenchmarkStream sends 1 GiB to `cat > /dev/null` through RunRemote (shared connection)
// and through a plain `ssh host 'cat > /dev/null'` with the same options but no sharing,
// fed from the same Go reader, in the same run.
func BenchmarkStream(b *testing.B) {
	s, r := setup(b)
	m := s.Target()
	ctx := context.Background()
	remote := []string{"sh", "-c", "cat > /dev/null"}
	b.Run("RunRemote", func(b *testing.B) {
		b.SetBytes(streamSize)
		for i := 0; i < b.N; i++ {
			if err := r.RunRemote(ctx, m, remote, sshexec.Stdio{Stdin: io.LimitReader(zeros{}, streamSize)}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plain-ssh", func(b *testing.B) {
		b.SetBytes(streamSize)
		known := b.TempDir() + "/known_hosts"
		writeKnown(b, known, s.HostKey, s.Port)
		for i := 0; i < b.N; i++ {
			cmd := exec.Command("ssh", "-i", m.PrivateKey, "-l", m.User, "-p", strconv.Itoa(m.Port),
				"-o", "BatchMode=yes", "-o", "UserKnownHostsFile="+known, "-o", "Compression=no",
				"127.0.0.1", "cat > /dev/null")
			cmd.Stdin = io.LimitReader(zeros{}, streamSize)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, out)
			}
		}
	})
}

func writeKnown(b *testing.B, file, hostKey string, port int) {
	line := "[127.0.0.1]:" + strconv.Itoa(port) + " " + hostKey + "\n"
	if err := writeFile(file, line); err != nil {
		b.Fatal(err)
	}
}
