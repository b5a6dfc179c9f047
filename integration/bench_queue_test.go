package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/farm"
)

// BenchmarkSixBuilds: six independent 3 s builds asked for at once of one machine with
// parallel-builds 2, each postponed request asked again every 5 s on the same hook, as
// guix-daemon does (build-poll-interval). Baseline: the ideal, 6 builds / 2 slots *
// 3 s = 9 s of building.
func BenchmarkSixBuilds(b *testing.B) {
	const n, parallel, secs = 6, 2, 3
	poll := 5 * time.Second
	f := farm.New(b, farm.Options{ParallelBuilds: parallel, GuixCosts: true})
	writeMachines(f, nil)
	var drvs []*drv.Derivation
	for i := range n {
		nonce := fmt.Sprintf("six%d-%d", i, time.Now().UnixNano())
		drvs = append(drvs, f.MakeDrv(drv.Spec{
			Name:  "t-six",
			Args:  []string{"-c", fmt.Sprintf(`sleep %d; echo ok > "$out"`, secs)},
			Env:   map[string]string{"NONCE": nonce},
			Nonce: nonce,
		}))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	postpones := 0
	t0 := time.Now()
	for _, d := range drvs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(format string, args ...any) {
				mu.Lock()
				failures = append(failures, d.Path+": "+fmt.Sprintf(format, args...))
				mu.Unlock()
			}
			h, err := f.StartHook(context.Background(), "x86_64-linux", 0, 0, daemon.Options{})
			if err != nil {
				fail("%v", err)
				return
			}
			defer h.Kill()
			for {
				ans, err := f.Request(h, d)
				if err != nil || (ans != "accept" && ans != "postpone") {
					fail("answer %q, %v", ans, err)
					return
				}
				if ans == "accept" {
					break
				}
				mu.Lock()
				postpones++
				mu.Unlock()
				time.Sleep(poll)
			}
			if err := f.SendPaths(h, d); err != nil {
				fail("%v", err)
				return
			}
			if st, _, err := h.Wait(); err != nil || st != 0 {
				fail("hook exited %d (%v): %q", st, err, h.Messages())
			}
		}()
	}
	wg.Wait()
	all := time.Since(t0)
	if len(failures) > 0 {
		b.Fatalf("%d builds failed:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	b.ReportMetric(all.Seconds(), "all-done-s")
	b.ReportMetric(float64(n/parallel*secs), "base-all-done-s")
	b.ReportMetric(float64(postpones), "postpones")
}
