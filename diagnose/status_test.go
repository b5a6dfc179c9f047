package diagnose

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"offload/hook"

	"offload/locking"
)

func acquireSlotForTest(dir string) (*locking.Lock, int, error) {
	return locking.AcquireSlot(dir, 1, "building /gnu/store/aaaa-x.drv")
}

func TestStatusFill(t *testing.T) {
	now := time.Unix(1700000000, 0)
	var st Status
	st.fill(hook.Facts{Cores: 4, Load1: 2, FreeBytes: 50 << 20, Time: now.Add(-5 * time.Second)}, now)
	if *st.NormalizedLoad != 0.5 || *st.ClockOffset != -5 || *st.FreeBytes != 50<<20 {
		t.Errorf("%+v", st)
	}
	joined := strings.Join(st.Warnings, "\n")
	for _, w := range []string{"clock is 5.0 s behind", "only 50.0 MiB free", "guix does not run"} {
		if !strings.Contains(joined, w) {
			t.Errorf("no warning %q in %q", w, st.Warnings)
		}
	}
	// Ahead, or behind by less than the margin: no clock warning.
	for _, d := range []time.Duration{3 * time.Second, -time.Second} {
		st = Status{}
		st.fill(hook.Facts{Cores: 1, FreeBytes: -1, GuixVersion: "guix 1", Time: now.Add(d)}, now)
		if len(st.Warnings) != 0 || st.FreeBytes != nil {
			t.Errorf("offset %v: %q", d, st.Warnings)
		}
	}
}

func TestSlotHolders(t *testing.T) {
	dir := t.TempDir()
	l, _, err := locking.AcquireSlot(dir, 3, "building /gnu/store/aaaa-x.drv")
	if err != nil {
		t.Fatal(err)
	}
	// Slot 1 was used and released: its file says who held it, but nobody does now.
	l1, _, _ := locking.AcquireSlot(dir, 3, "building /gnu/store/bbbb-y.drv")
	l1.Release()
	hs, err := SlotHolders(dir, 3)
	if err != nil || len(hs) != 1 {
		t.Fatalf("%+v %v", hs, err)
	}
	want := SlotHolder{Slot: 0, PID: os.Getpid(), Reason: "building /gnu/store/aaaa-x.drv", Derivation: "/gnu/store/aaaa-x.drv"}
	if hs[0] != want {
		t.Errorf("got %+v want %+v", hs[0], want)
	}
	l.Release()
	if hs, err := SlotHolders(dir, 3); err != nil || len(hs) != 0 {
		t.Errorf("after release: %+v %v", hs, err)
	}
	if hs, err := SlotHolders(filepath.Join(dir, "none"), 2); err != nil || len(hs) != 0 {
		t.Errorf("no directory: %+v %v", hs, err)
	}
}

func TestWriteStatusTable(t *testing.T) {
	f := func(x float64) *float64 { return &x }
	free := int64(20 << 30)
	since := time.Date(2024, 5, 1, 10, 0, 0, 0, time.Local)
	sts := []Status{
		{Machine: "fast:22", Reachable: true, Kernel: "Linux 6.1", Architecture: "x86_64", HostName: "fast", Cores: 8,
			NormalizedLoad: f(0.25), FreeBytes: &free, ClockOffset: f(-0.004), GuixVersion: "guix (GNU Guix) 8e2f32cee982d42a79e53fc1e9aa7b8ff0514714",
			ParallelBuilds: 2, SlotsInUse: 1, Slots: []SlotHolder{{Slot: 1, PID: 42, Reason: "building /gnu/store/x.drv"}}},
		{Machine: "slow:2222", Error: "ssh cannot connect or log in: ssh: connect to host slow port 2222: Connection refused", DownSince: &since, ParallelBuilds: 1,
			LastError: "asking which inputs it lacks: `guix archive --missing` exited with status 1", Failures: 2,
			Warnings: []string{"state is odd"}},
	}
	var b bytes.Buffer
	if err := WriteStatusTable(&b, sts); err != nil {
		t.Fatal(err)
	}
	want := `MACHINE    STATE                           KERNEL     ARCH    HOST  CORES  LOAD  FREE      CLOCK  GUIX          SLOTS
fast:22    up                              Linux 6.1  x86_64  fast  8      0.25  20.0 GiB  -0.0s  8e2f32cee982  1/2
slow:2222  DOWN since 2024-05-01 10:00:00  -          -       -     -      -     -         -      -             0/1
machine 'fast:22': slot 1: process 42: building /gnu/store/x.drv
machine 'slow:2222': unreachable: ssh cannot connect or log in: ssh: connect to host slow port 2222: Connection refused
machine 'slow:2222': the hook's last failure: asking which inputs it lacks: ` + "`guix archive --missing`" + ` exited with status 1
machine 'slow:2222': warning: state is odd
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	if err := WriteStatusJSON(&b, nil, true); err != nil || b.String() != "[]\n" {
		t.Errorf("empty JSON: %q %v", b.String(), err)
	}
	b.Reset()
	WriteStatusJSON(&b, sts[1:], true)
	var back []map[string]any
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || strings.Count(b.String(), "\n") != 1 {
		t.Fatalf("compact JSON: %v %q", err, b.String())
	}
	if back[0]["reachable"] != false || back[0]["down_since"] == nil || back[0]["slots"] == nil {
		t.Errorf("%v", back[0])
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 20: "1.5 GiB", 3 << 40: "3.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}

func TestWriteRemoteSlots(t *testing.T) {
	rs := &hook.RemoteSlots{Held: 2, Holders: []hook.RemoteSlot{{Slot: 1, Host: "laptop", PID: 12, Derivation: "/gnu/store/a.drv"}, {Slot: 2}}}
	var b bytes.Buffer
	writeRemoteSlots(&b, "build1:22", rs)
	if got := b.String(); got != "machine 'build1:22': 2 build slots taken on the machine, by any host\n"+
		"machine 'build1:22': machine slot 1: host laptop, process 12: building /gnu/store/a.drv\n"+
		"machine 'build1:22': machine slot 2: host ?, process 0: building ?\n" {
		t.Errorf("status lines:\n%s", got)
	}
}

// A drained machine says so in its row and on a line of its own.
func TestWriteStatusDrained(t *testing.T) {
	sts := []Status{{Machine: "m:22", Reachable: true, Cores: 2, ParallelBuilds: 1, Drained: true, DrainedSince: "since 2026-01-02T03:04:05Z (disk swap)"}}
	var b bytes.Buffer
	if err := WriteStatusTable(&b, sts); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if !strings.Contains(lines[1], "up, drained") || lines[2] != "m:22: drained since 2026-01-02T03:04:05Z (disk swap): no new builds go there (offload undrain)" {
		t.Errorf("got:\n%s", b.String())
	}
}
