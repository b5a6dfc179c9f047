package integration

import (
	"fmt"
	"testing"
	"time"

	"offload/integration/farm"
	"offload/placement"
)

// BenchmarkPlacement (issue 21): a mix of builds, one after another, on two machines of
// the same speed, where each build's input was built earlier on one of them (it holds
// it) and the other lacks it; the builds themselves are short. The whole mix is timed
// with placement and, in the same run on a farm set up the same way, with the ranking
// by speed and load only (OFFLOAD_PLACEMENT=off, as Guix's hook ranks; equal machines
// then share the work at random). Figures: the mix's total seconds, the MiB sent, and
// how many builds went to the machine that lacked their input.
func BenchmarkPlacement(b *testing.B) {
	builds := pick(8, 4)
	size := pick(int64(48<<20), int64(16<<20))
	type outcome struct {
		total     time.Duration
		sentMiB   float64
		misplaced int
	}
	run := func(b *testing.B, env ...string) outcome {
		f := farm.New(b, farm.Options{Machines: 2})
		writeMachines(f, nil)
		type job struct {
			name, nonce string
			holder      *farm.Machine
			input       string
		}
		var jobs []job
		for i := range builds {
			holder := f.Machines[i%2]
			in := addRandomItem(b, f, fmt.Sprintf("mix-input-%d", i), uint64(100+i), 0, size)
			if err := f.CopyToMachine(holder, in); err != nil {
				b.Fatal(err)
			}
			jobs = append(jobs, job{name: fmt.Sprintf("t-mix%d", i), nonce: fmt.Sprintf("mix%d", i), holder: holder, input: in})
		}
		var o outcome
		for _, j := range jobs {
			d := inputDrv(f, j.name, j.nonce, j.input)
			other := f.Machines[0]
			if other == j.holder {
				other = f.Machines[1]
			}
			before := countContaining(other.Invocations(), "build")
			t0 := time.Now()
			r := offloadTB(b, f, d, env...)
			o.total += time.Since(t0)
			if r.answer != "accept" || r.status != 0 {
				b.Fatalf("%s: answer %s status %d:\n%s", j.name, r.answer, r.status, r.messages)
			}
			if countContaining(other.Invocations(), "build") > before {
				o.misplaced++
			}
			for _, m := range sentRe.FindAllStringSubmatch(r.messages, -1) {
				var mib float64
				fmt.Sscanf(m[2], "%f", &mib)
				o.sentMiB += mib
			}
		}
		return o
	}
	for range b.N {
		with := run(b)
		old := run(b, placement.Env+"=off")
		b.ReportMetric(with.total.Seconds(), "mix-s")
		b.ReportMetric(old.total.Seconds(), "base-mix-s")
		b.ReportMetric(with.sentMiB, "sent-MiB")
		b.ReportMetric(old.sentMiB, "base-sent-MiB")
		b.ReportMetric(float64(with.misplaced), "misplaced-builds")
		b.ReportMetric(float64(old.misplaced), "base-misplaced-builds")
		b.Logf("%d builds of %d MiB inputs: placement %.1f s, %d misplaced; speed and load only %.1f s, %d misplaced",
			builds, size>>20, with.total.Seconds(), with.misplaced, old.total.Seconds(), old.misplaced)
	}
}
