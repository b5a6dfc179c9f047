package hook

import (
	"context"
	"fmt"
	"io"
	"offload/machines"
	"offload/sshexec"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The status script runs here under /bin/sh and its output parses into this host's
// facts, checked against independent commands.
func TestStatusScriptHere(t *testing.T) {
	dir := t.TempDir()
	before := time.Now()
	out, err := exec.Command("/bin/sh", "-c", factsScript, "sh", dir, "full").Output()
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	f, err := ParseFacts(string(out))
	if err != nil {
		t.Fatal(err)
	}
	run := func(argv ...string) string {
		b, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if f.Kernel != run("uname", "-s")+" "+run("uname", "-r") || f.Architecture != run("uname", "-m") || f.HostName != run("uname", "-n") {
		t.Errorf("facts %+v", f)
	}
	if f.Cores < 1 || f.FreeBytes <= 0 {
		t.Errorf("cores %d, free %d", f.Cores, f.FreeBytes)
	}
	if f.MemAvailable <= 0 {
		t.Errorf("no memory available read from /proc/meminfo: %q", out)
	}
	if f.Time.Before(before.Truncate(time.Second)) || f.Time.After(after) {
		t.Errorf("clock %v not within [%v, %v]", f.Time, before, after)
	}
}

func TestParseFacts(t *testing.T) {
	out := "kernel Linux 6.1.0-18-amd64\narch aarch64\nhost build1\ncores 16\nload 4.00 3.5 2.0 1/100 42\n" +
		"df /dev/sda1 1000000 400000 600000 40% /gnu/store\nmem MemAvailable:    2048 kB\nguix guix (GNU Guix) 1.4.0\ntime 1700000000.250000000\n"
	f, err := ParseFacts(out)
	if err != nil {
		t.Fatal(err)
	}
	want := Facts{Kernel: "Linux 6.1.0-18-amd64", Architecture: "aarch64", HostName: "build1", Cores: 16, Load1: 4,
		FreeBytes: 600000 * 1024, MemAvailable: 2 << 20, GuixVersion: "guix (GNU Guix) 1.4.0", Time: time.Unix(1700000000, 250000000)}
	if f != want {
		t.Errorf("got %+v\nwant %+v", f, want)
	}
	// A date without %N, no df, no guix: still a status.
	f, err = ParseFacts("kernel Linux 5\narch x86_64\nhost h\ncores \nload 0.5 0 0 1/1 1\ndf \nmem \nguix \ntime 1700000000.%N\n")
	if err != nil || f.FreeBytes != -1 || f.MemAvailable != 0 || f.GuixVersion != "" || f.Time != time.Unix(1700000000, 0) || f.Cores != 0 {
		t.Errorf("%+v %v", f, err)
	}
	for _, bad := range []string{"", "Welcome to the machine!\n", "load 1 1 1\n", "time 17\n", "load x\ntime 1\n"} {
		if _, err := ParseFacts(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestProbesAtMostMaxProbesAtOnce: a machines file of many entries does not start an
// ssh per machine all at once: at most maxProbes run together.
func TestProbesAtMostMaxProbesAtOnce(t *testing.T) {
	T := t.TempDir()
	runs := filepath.Join(T, "runs")
	if err := os.Mkdir(runs, 0o755); err != nil {
		t.Fatal(err)
	}
	// Each ssh counts the ones running beside it, stays half a second, and fails as a
	// machine that refuses the connection does.
	ssh := filepath.Join(T, "ssh")
	script := fmt.Sprintf(`#!/bin/sh
mkdir %[1]s/run.$$
ls %[1]s | grep -c '^run\.' >> %[2]s/counts
i=0; while [ $i -lt 10 ]; do sleep 0.05; i=$((i+1)); done
rmdir %[1]s/run.$$
exit 255
`, runs, T)
	if err := os.WriteFile(ssh, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	h := &Hook{Conf: Config{StateDir: filepath.Join(T, "state")}, Out: io.Discard,
		Runner: &sshexec.Runner{StateDir: filepath.Join(T, "state"), SSH: ssh, ControlPersist: -1}}
	h.init()
	var cands []*candidate
	n := maxProbes*2 + 10
	for i := range n {
		m := &machines.Machine{Name: "127.0.0.1", Port: 41000 + i, User: "u", ParallelBuilds: 1, HostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICme63vje2u99wh9zsKvDwdXtye8nYzRspYh/HR6e1X7"}
		cands = append(cands, &candidate{m: m, target: h.target(m)})
	}
	h.probeAll(context.Background(), Request{Drv: "/gnu/store/x.drv"}, cands, time.Now())
	b, err := os.ReadFile(filepath.Join(T, "counts"))
	if err != nil {
		t.Fatalf("%v (first machine: %v)", err, cands[0].err)
	}
	most, started := 0, 0
	for _, f := range strings.Fields(string(b)) {
		k, _ := strconv.Atoi(f)
		most, started = max(most, k), started+1
	}
	if started < n {
		t.Errorf("%d ssh started for %d machines", started, n)
	}
	if most > maxProbes {
		t.Errorf("%d ssh ran at once, want at most %d", most, maxProbes)
	}
	for _, c := range cands {
		if c.probe != nil || c.err == nil {
			t.Fatalf("machine %d: probe %v, err %v: want the refusal", c.m.Port, c.probe, c.err)
		}
	}
}
