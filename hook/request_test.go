package hook

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const drv = "/gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv"

func TestParseRequest(t *testing.T) {
	good := []struct {
		line string
		want Request
	}{
		{"0 x86_64-linux " + drv + " ", Request{System: "x86_64-linux", Drv: drv}},
		{"1 aarch64-linux " + drv + " kvm,big-mem", Request{WantsLocal: true, System: "aarch64-linux", Drv: drv, Features: []string{"kvm", "big-mem"}}},
		{"1 i686-linux " + drv, Request{WantsLocal: true, System: "i686-linux", Drv: drv}},
	}
	for _, g := range good {
		got, err := ParseRequest(g.line, "/gnu/store")
		if err != nil {
			t.Errorf("ParseRequest(%q): %v", g.line, err)
			continue
		}
		if len(got.Features) == 0 {
			got.Features = nil
		}
		if !reflect.DeepEqual(got, g.want) {
			t.Errorf("ParseRequest(%q) = %+v, want %+v", g.line, got, g.want)
		}
	}
	bad := []string{
		"",
		"garbage",
		"2 x86_64-linux " + drv + " ",
		"0 x86_64-linux /etc/passwd ",
		"0 x86_64-linux /gnu/store/x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok ",
		"0 x86_64-linux /gnu/store/../x37x84zbqzs261xph9j4zdlbm7mmnix1-t-ok.drv ",
		"0 x86_64;rm " + drv + " ",
		"0 x86_64-linux " + drv + " kvm extra",
		"0 x86_64-linux " + drv + " kvm,,x",
	}
	for _, line := range bad {
		_, err := ParseRequest(line, "/gnu/store")
		if err == nil {
			t.Errorf("ParseRequest(%q) accepted a malformed line", line)
			continue
		}
		if !strings.Contains(err.Error(), "malformed request line") || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseRequest(%q): want one line quoting it, got %q", line, err)
		}
	}
}

// TestParseRequestVectors parses every request line real guix-daemon wrote.
func TestParseRequestVectors(t *testing.T) {
	files, _ := filepath.Glob("../testdata/vectors/hook/*/stdin.raw")
	if len(files) == 0 {
		t.Fatal("no vectors in ../testdata/vectors/hook")
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// The first line of every recording is a request.
		line := strings.SplitN(string(b), "\n", 2)[0]
		r, err := ParseRequest(line, "/gnu/store")
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if strings.Contains(f, "decline-features") && !reflect.DeepEqual(r.Features, []string{"kvm", "big-mem"}) {
			t.Errorf("%s: features %q", f, r.Features)
		}
		n++
	}
	t.Logf("parsed %d recorded request lines", n)
}

func TestClassify(t *testing.T) {
	// Lines from testdata/vectors/hook/fail-c1 and sleep30-* (real guix-daemon output).
	failDrv := "/gnu/store/m45v4smrv1npmj51rgkb02hk6byw1wqh-t-fail.drv"
	sleepDrv := "/gnu/store/r83j9piiij68crz5dbmyyvc90hbpahqj-t-sleep30.drv"
	cases := []struct {
		stderr, drv string
		want        int
	}{
		{"t-fail: about to fail\nbuilder for `" + failDrv + "' failed with exit code 1\n@ build-failed " + failDrv + " - 1 builder for `" + failDrv + "' failed with exit code 1\nguix build: error: build of `" + failDrv + "' failed\n", failDrv, ExitBuildFailed},
		{"t-sleep30 start c1\nbuilding of `" + sleepDrv + "' timed out after 5 seconds\nguix build: error: build of `" + sleepDrv + "' failed\n", sleepDrv, ExitTimedOut},
		{"building of `" + sleepDrv + "' timed out after 5 seconds of silence\nguix build: error: build of `" + sleepDrv + "' failed\n", sleepDrv, ExitTimedOut},
		{"sh: 1: guix: not found\n", failDrv, ExitTransient},
		{"guix build: error: failed to connect to `/var/guix/daemon-socket/socket': No such file or directory\n", failDrv, ExitTransient},
		// A build log that mentions another derivation's failure is not ours.
		{"guix build: error: build of `" + sleepDrv + "' failed\n", failDrv, ExitTransient},
	}
	for i, c := range cases {
		if got := classify(c.stderr, c.drv); got != c.want {
			t.Errorf("case %d: classify = %d, want %d", i, got, c.want)
		}
	}
}

// TestProbeScriptBasic: without "full", the script gives the hook's facts only (no
// guix process), and they parse.
func TestProbeScriptBasic(t *testing.T) {
	out, err := exec.Command("/bin/sh", "-c", factsScript, "sh", t.TempDir(), "basic").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "guix ") || strings.Contains(string(out), "kernel ") {
		t.Errorf("the basic probe asked for status facts: %q", out)
	}
	f, err := ParseFacts(string(out))
	if err != nil || f.Cores < 1 || f.FreeBytes <= 0 {
		t.Errorf("%+v %v", f, err)
	}
}

// TestParsePathsRefusesNonStorePaths: the inputs and outputs lines after "# accept" name
// what is sent to a machine and what is restored here; a path outside the store must
// never get that far.
func TestParsePathsRefusesNonStorePaths(t *testing.T) {
	const store = "/gnu/store"
	good := store + "/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12"
	if got, err := parsePaths(good+" ", store, "inputs"); err != nil || len(got) != 1 || got[0] != good {
		t.Fatalf("parsePaths(%q) = %v, %v", good, got, err)
	}
	for _, bad := range []string{
		"/etc/passwd",
		"../x",
		store + "/../etc/passwd",
		"/tmp/0123456789abcdfghijklmnpqrsvwxyz-hello",
		store + "/0123456789abcdfghijklmnpqrsvwxyz-hello/../../etc",
		store,
	} {
		for _, what := range []string{"inputs", "outputs"} {
			_, err := parsePaths(good+" "+bad+" ", store, what)
			if err == nil {
				t.Errorf("%s line with %q accepted", what, bad)
				continue
			}
			if !strings.Contains(err.Error(), what+" line") {
				t.Errorf("%s line with %q: error %q does not say which line", what, bad, err)
			}
		}
	}
}
