package machines

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

// machinesFile returns a file of n machines in the manual's style.
func machinesFile(n int) []byte {
	var b strings.Builder
	b.WriteString("(list\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `  (build-machine
    (name "node%d.example.org")
    (systems (list "x86_64-linux" "i686-linux"))
    (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ%d root@(none)")
    (user "offload")
    (parallel-builds 4)
    (speed 2.))
`, i, i)
	}
	b.WriteString(")\n")
	return []byte(b.String())
}

func TestMachinesFileSizes(t *testing.T) {
	for _, n := range []int{1, 10, 100} {
		ms, ws, err := Parse("f.scm", machinesFile(n))
		if err != nil || len(ms) != n || len(ws) != 0 {
			t.Fatalf("%d machines: got %d, %v, %v", n, len(ms), ws, err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		src := machinesFile(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				if _, _, err := Parse("f.scm", src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRank(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		var cands []Candidate
		for i := 0; i < n; i++ {
			cands = append(cands, Candidate{M: mach(fmt.Sprint(i), float64(i%3+1), f64(0.8)), Probe: probe(float64(i%5), 4, 10*gib)})
		}
		rnd := rand.New(rand.NewSource(1))
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				Rank(cands, rnd)
			}
		})
	}
}

// BenchmarkLoadGuixSystem reads Guix System's generated file (the append-map wrapper,
// nested lists) and the one whose host key comes from a file, from disk, as the hook
// does for every request; BenchmarkLoad/manual is the hand-written baseline.
func BenchmarkLoad(b *testing.B) {
	for _, f := range []string{"manual", "guix-system", "guix-system-host-key"} {
		b.Run(f, func(b *testing.B) {
			for b.Loop() {
				l, err := LoadWith(context.Background(), "testdata/"+f+".scm", LoadOptions{})
				if err != nil || l.How.By != ByEvaluator {
					b.Fatal(l.How, err)
				}
			}
		})
	}
}
