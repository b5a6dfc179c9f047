package machines

import (
	"errors"
	"math/rand"
	"strings"
	"testing"
)

func mach(name string, speed float64, threshold *float64) *Machine {
	return &Machine{Name: name, Port: 22, Speed: speed, OverloadThreshold: threshold}
}

func probe(load float64, cores int, free int64) *Probe {
	return &Probe{Load1: load, Cores: cores, FreeBytes: free}
}

const gib = 1 << 30

func TestNormalizedLoad(t *testing.T) {
	tests := []struct {
		p    Probe
		want float64
	}{
		{Probe{Load1: 2, Cores: 4}, 0.5},
		{Probe{Load1: 8, Cores: 4}, 1},
		{Probe{Load1: 0.5, Cores: 0}, 0.5},
		{Probe{Load1: 3, Cores: -2}, 1},
		{Probe{Load1: 0, Cores: 8}, 0},
	}
	for _, tc := range tests {
		if got := tc.p.NormalizedLoad(); got != tc.want {
			t.Errorf("%+v.NormalizedLoad() = %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestRankVerdicts(t *testing.T) {
	over := mach("over", 10, f64(0.8))
	edge := mach("edge", 10, f64(0.8))
	nothresh := mach("nothresh", 1, nil)
	disk := mach("disk", 10, f64(0.8))
	diskUnknown := mach("disk-unknown", 1, f64(0.8))
	dead := mach("dead", 10, f64(0.8))
	fast := mach("fast", 4, f64(0.8))
	slow := mach("slow", 1, f64(0.8))
	cands := []Candidate{
		{M: over, Probe: probe(3.8, 4, 10*gib)},     // 0.95 >= 0.8
		{M: edge, Probe: probe(3.2, 4, 10*gib)},     // exactly 0.8: at the threshold counts
		{M: nothresh, Probe: probe(100, 4, 10*gib)}, // #f: load ignored, score 1/(1+1)
		{M: disk, Probe: probe(0, 4, 100<<20-1)},    // just under 100 MiB
		{M: diskUnknown, Probe: probe(0, 4, -1)},    // unknown free space: usable, score 1
		{M: dead, Err: errors.New("ssh: connect to host dead port 22: connection refused")},
		{M: fast, Probe: probe(1, 4, 10*gib)},  // 4/(1+0.25) = 3.2
		{M: slow, Probe: probe(0, 2, 100<<20)}, // exactly 100 MiB is enough; 1/(1+0) = 1
	}
	vs := Rank(cands, rand.New(rand.NewSource(1)))
	var order []string
	for _, v := range vs {
		order = append(order, v.M.Name)
	}
	// usable best first (fast 3.2, then disk-unknown and slow at 1 in some
	// order, then nothresh 0.5), then the rest in input order.
	if order[0] != "fast" || order[3] != "nothresh" ||
		!(order[1] == "disk-unknown" && order[2] == "slow" || order[1] == "slow" && order[2] == "disk-unknown") ||
		strings.Join(order[4:], " ") != "over edge disk dead" {
		t.Errorf("order = %v", order)
	}
	byName := map[string]Verdict{}
	for _, v := range vs {
		byName[v.M.Name] = v
	}
	wantUsable := map[string]bool{"fast": true, "slow": true, "disk-unknown": true, "nothresh": true}
	for name, v := range byName {
		if v.Usable != wantUsable[name] {
			t.Errorf("%s: usable = %v (%s)", name, v.Usable, v.Reason)
		}
	}
	wantScore := map[string]float64{"fast": 3.2, "slow": 1, "disk-unknown": 1, "nothresh": 0.5}
	for name, s := range wantScore {
		if byName[name].Score != s {
			t.Errorf("%s: score = %v, want %v", name, byName[name].Score, s)
		}
	}
	wantReason := map[string]string{
		"over": "machine 'over:22' is overloaded (normalized load 0.95 >= 0.80)",
		"edge": "machine 'edge:22' is overloaded (normalized load 0.80 >= 0.80)",
		"disk": "machine 'disk:22' is low on disk space (99 MiB free in the store, need 100 MiB)",
		"dead": "machine 'dead:22' is unreachable: ssh: connect to host dead port 22: connection refused",
	}
	for name, r := range wantReason {
		if byName[name].Reason != r {
			t.Errorf("%s: reason\n got %s\nwant %s", name, byName[name].Reason, r)
		}
	}
	for _, v := range vs {
		if strings.Contains(v.Reason, "\n") || v.Reason == "" {
			t.Errorf("%s: reason %q is not one line", v.M.Name, v.Reason)
		}
	}
}

func TestRankUnreachableWithoutError(t *testing.T) {
	vs := Rank([]Candidate{{M: &Machine{Name: "x", Port: 2222, Speed: 1}}}, nil)
	if vs[0].Usable || vs[0].Reason != "machine 'x:2222' is unreachable: no load probe" {
		t.Errorf("verdict = %+v", vs[0])
	}
}

// TestRankSpreadsTies checks that equal machines share the work: over many
// requests each of three equal machines comes first about a third of the
// time, and a better machine always wins.
func TestRankSpreadsTies(t *testing.T) {
	rnd := rand.New(rand.NewSource(42))
	var cands []Candidate
	for _, n := range []string{"a", "b", "c"} {
		cands = append(cands, Candidate{M: mach(n, 1, f64(0.8)), Probe: probe(0, 4, 10*gib)})
	}
	first := map[string]int{}
	const runs = 3000
	for i := 0; i < runs; i++ {
		first[Rank(cands, rnd)[0].M.Name]++
	}
	for _, n := range []string{"a", "b", "c"} {
		if first[n] < runs/3-runs/10 || first[n] > runs/3+runs/10 {
			t.Errorf("machine %s first %d times out of %d: %v", n, first[n], runs, first)
		}
	}
	better := append([]Candidate{{M: mach("best", 1.01, f64(0.8)), Probe: probe(0, 4, 10*gib)}}, cands...)
	for i := 0; i < 100; i++ {
		if got := Rank(better[i%len(better):], rnd)[0].M.Name; i%len(better) == 0 && got != "best" {
			t.Fatalf("best machine not first: %s", got)
		}
	}
}

func TestRankDoesNotReorderInput(t *testing.T) {
	cands := []Candidate{
		{M: mach("a", 1, nil), Probe: probe(0, 1, -1)},
		{M: mach("b", 2, nil), Probe: probe(0, 1, -1)},
	}
	Rank(cands, rand.New(rand.NewSource(3)))
	if cands[0].M.Name != "a" || cands[1].M.Name != "b" {
		t.Errorf("Rank changed its input: %v %v", cands[0].M.Name, cands[1].M.Name)
	}
}

func TestUnique(t *testing.T) {
	a := &Machine{Name: "a", Port: 22}
	a2 := &Machine{Name: "a", Port: 22, Systems: []string{"i686-linux"}}
	b := &Machine{Name: "a", Port: 2222}
	got := Unique([]*Machine{a, b, a2})
	if len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("Unique = %v", got)
	}
}

// TestRankRemoteSlots: a machine whose own build slots are all taken (by any host) is
// not usable, with a reason that says so, unless the build is queued behind one of
// ours; an unknown count (no flock there) or a free slot leaves it usable.
func TestRankRemoteSlots(t *testing.T) {
	withSlots := func(name string, parallel int) *Machine {
		m := mach(name, 1, nil)
		m.ParallelBuilds = parallel
		return m
	}
	p := func(held int) *Probe { pr := probe(0, 4, 10*gib); pr.RemoteSlotsHeld = held; return pr }
	for _, c := range []struct {
		name          string
		parallel      int
		held          int
		queued        bool
		usable        bool
		reasonContain string
	}{
		{"full", 2, 2, false, false, "machine 'full:22' is full: 2 of 2 build slots taken on the machine, by other hosts too"},
		{"one-free", 2, 1, false, true, "is available"},
		{"unknown", 2, -1, false, true, "is available"},
		{"default-one", 0, 1, false, false, "1 of 1 build slots taken"},
		{"queued", 2, 2, true, true, "is available"},
	} {
		t.Run(c.name, func(t *testing.T) {
			vs := Rank([]Candidate{{M: withSlots(c.name, c.parallel), Probe: p(c.held), Queued: c.queued}}, nil)
			if vs[0].Usable != c.usable || !strings.Contains(vs[0].Reason, c.reasonContain) {
				t.Errorf("usable %v, reason %q; want %v and %q", vs[0].Usable, vs[0].Reason, c.usable, c.reasonContain)
			}
		})
	}
}
