package integration

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"offload/integration/drv"
	"offload/integration/farm"
)

// BenchmarkSubstitutes: a 200 MB input closure (20 items of random bytes) of which
// 150 MB (15 items) have a substitute on the machines, offloaded to a machine named in
// OFFLOAD_SUBSTITUTES, against the same offload to a machine that is not (everything
// uploaded), on each path: on the shell path the machine's `guix build` fetches, on the
// daemon path its daemon's BuildPaths (the hook's substituteOnDaemon). The machines'
// substitute server is a local directory (offload/integration/subst), so the time saved
// is the upload's, and the substitutes cost only the machine's disk: over a real uplink
// both the saving and the download would be larger.
func BenchmarkSubstitutes(b *testing.B) {
	for _, path := range []string{"shell", "daemon"} {
		b.Run(path+"-path", func(b *testing.B) { benchSubstitutes(b, path) })
	}
}

func benchSubstitutes(b *testing.B, path string) {
	items, subst, size := 20, 15, pick(int64(10_000_000), int64(500_000))
	f := farm.New(b, farm.Options{Machines: 2})
	var inputs []string
	for i := range items {
		inputs = append(inputs, addRandomItem(b, f, fmt.Sprintf("blob%d", i), uint64(i+1), 0, size))
	}
	for _, m := range f.Machines {
		if err := f.AddSubstitutes(m, inputs[:subst]...); err != nil {
			b.Fatal(err)
		}
	}
	// The shell path sends the .drv in the bundle and counts it; the daemon path sends
	// it by AddTextToStore, apart.
	drvs := 0
	if path == "shell" {
		drvs = 1
	}
	type figures struct{ whole, up, upMB float64 }
	run := func(m *farm.Machine, nonce string, env ...string) figures {
		d := f.MakeDrv(drv.Spec{
			Name:      "t-big",
			Args:      []string{"-c", `echo "$IN" > "$out"`},
			Env:       map[string]string{"IN": strings.Join(inputs, " ")},
			InputSrcs: inputs,
			Nonce:     nonce,
		})
		writeMachinesText(b, f, []string{machineEntry(m, 0, 1, "")})
		t0 := time.Now()
		res := offloadTB(b, f, d, append([]string{"OFFLOAD_PATH=" + path}, env...)...)
		whole := time.Since(t0)
		if res.answer != "accept" || res.status != 0 {
			b.Fatalf("offload: %s %d:\n%s", res.answer, res.status, res.messages)
		}
		sent := sentRe.FindStringSubmatch(res.messages)
		if sent == nil {
			b.Fatalf("no 'sent N store items' line:\n%s", res.messages)
		}
		if want := strconv.Itoa(items + drvs); len(env) == 0 && sent[1] != want {
			b.Fatalf("sent %s items without substitutes, want %s:\n%s", sent[1], want, res.messages)
		}
		if want := strconv.Itoa(items - subst + drvs); len(env) > 0 && (sent[1] != want || !strings.Contains(res.messages, fmt.Sprintf("substituted %d of %d missing inputs", subst, items))) {
			b.Fatalf("sent %s items with substitutes, want %s:\n%s", sent[1], want, res.messages)
		}
		num := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
		return figures{whole: whole.Seconds(), up: num(sent[3]), upMB: num(sent[2]) * 1.048576}
	}
	base := run(f.Machines[1], "subst-base")
	m := f.Machines[0]
	got := run(m, "subst-on", fmt.Sprintf("OFFLOAD_SUBSTITUTES=%s:%d", m.Name, m.Port))
	b.ReportMetric(got.whole, "whole-offload-s")
	b.ReportMetric(base.whole, "base-whole-offload-s")
	b.ReportMetric(got.up, "upload-s")
	b.ReportMetric(base.up, "base-upload-s")
	b.ReportMetric(got.upMB, "wire-MB")
	b.ReportMetric(base.upMB, "base-wire-MB")
}
