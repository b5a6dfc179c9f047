package hook

import (
	"os/exec"
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
