package integration

import (
	"strings"
	"testing"

	"offload/integration/farm"
	"offload/sshexec/sshtest"
)

// BenchmarkSharedMachine: three hosts (hooks with their own state directories), each
// listing the one machine with parallel-builds 2, ask for four builds each at once
// (sharedBuilds). Without the machine's own slots it would run six at once; with them,
// two. Baseline: the ideal, waves of 2 builds x build time. The most builds at once on
// the machine, from the builders' own lines, is checked, not timed.
func BenchmarkSharedMachine(b *testing.B) {
	sshtest.NeedTool(b, "flock")
	const hosts, perHost, parallel = 3, 4, 2
	secs := pick(2, 1)
	f := farm.New(b, farm.Options{ParallelBuilds: parallel})
	writeMachines(f, nil)
	o := sharedBuilds(b, f, hosts, perHost, secs)
	if len(o.failures) > 0 {
		b.Fatalf("%d builds failed:\n%s", len(o.failures), strings.Join(o.failures, "\n"))
	}
	if o.maxConc > parallel {
		b.Errorf("the machine ran %d builds at once, more than its parallel-builds %d", o.maxConc, parallel)
	}
	waves := (hosts*perHost + parallel - 1) / parallel
	b.ReportMetric(o.elapsed.Seconds(), "all-done-s")
	b.ReportMetric(float64(waves*secs), "base-all-done-s")
	b.ReportMetric(float64(o.maxConc), "max-concurrent-on-machine")
	b.ReportMetric(float64(parallel), "base-max-concurrent-on-machine")
}
