package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"offload/integration/drv"
)

func (s *side) makeDrv(t *testing.T, spec drv.Spec) *drv.Derivation {
	t.Helper()
	if spec.Builder == "" {
		spec.Builder = "/bin/sh"
	}
	if spec.Env == nil {
		spec.Env = map[string]string{}
	}
	if _, ok := spec.Env["PATH"]; !ok {
		spec.Env["PATH"] = "/usr/bin:/bin"
	}
	d, err := s.store.Make(spec)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// On a build machine (physical dir != logical dir) the builder really runs,
// writes its outputs where that store keeps its bytes, and they become valid
// with the references found in them.
func TestBuildSuccess(t *testing.T) {
	m := newSides(t, 2)[1]
	input := m.addItem(t, "input", map[string]string{"": "input bytes"})
	// $lib holds the physical path; the logical one is $NIX_STORE/basename.
	d := m.makeDrv(t, drv.Spec{Name: "t-two", Outputs: []string{"out", "lib"}, InputSrcs: []string{input},
		Args: []string{"-c", `echo "building t-two nonce=$NONCE"; echo lib > $lib; echo "uses $IN and $NIX_STORE/${lib##*/}" > $out; echo to-stderr >&2`},
		Env:  map[string]string{"IN": input}, Nonce: "1"})
	lib, _ := d.Output("lib")
	out, _ := d.Output("out")
	root := filepath.Join(t.TempDir(), "root")
	r := m.guix(t, nil, nil, "build", "--max-silent-time=30", "--timeout", "60", "--no-grafts", "-r", root, d.Path)
	if r.status != 0 {
		t.Fatalf("build: %d %s", r.status, r.stderr)
	}
	if r.stdout != lib.Path+"\n"+out.Path+"\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	for _, want := range []string{"The following derivation will be built:\n   " + d.Path + "\n", "building " + d.Path + "...\n",
		"building t-two nonce=1\n", "to-stderr\n", "successfully built " + d.Path + "\n"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "@ build-") {
		t.Errorf("guix build does not show raw trace lines: %s", r.stderr)
	}
	realOut, _ := m.store.Real(out.Path)
	if !strings.HasPrefix(realOut, m.store.Physical) || realOut == out.Path {
		t.Fatal("test setup: physical == logical")
	}
	got, err := os.ReadFile(realOut)
	if err != nil || string(got) != "uses "+input+" and "+lib.Path+"\n" {
		t.Errorf("output %q %v", got, err)
	}
	if _, err := os.Lstat(out.Path); err == nil {
		t.Error("output written at its logical path")
	}
	if fi, _ := os.Stat(realOut); fi.Mode().Perm() != 0o444 || fi.ModTime().Unix() != 1 {
		t.Errorf("output not canonicalised: %v %v", fi.Mode(), fi.ModTime())
	}
	info, err := m.store.Info(out.Path)
	if err != nil || strings.Join(info.References, " ") != strings.Join(sorted(input, lib.Path), " ") || info.Deriver != d.Path {
		t.Errorf("out registered as %+v %v", info, err)
	}
	for i, p := range []string{lib.Path, out.Path} {
		if target, err := os.Readlink(root + "-" + strconv.Itoa(i)); err != nil || target != p {
			t.Errorf("root %d: %q %v", i, target, err)
		}
	}
	// Built already: nothing runs again, the paths are printed.
	r2 := m.guix(t, nil, nil, "build", d.Path)
	if r2.status != 0 || r2.stdout != r.stdout || strings.Contains(r2.stderr, "building") {
		t.Errorf("second build: %d %q %q", r2.status, r2.stdout, r2.stderr)
	}
}

func sorted(ss ...string) []string { return slices.Sorted(slices.Values(ss)) }

func TestBuildVerbosity(t *testing.T) {
	m := newSides(t, 2)[1]
	d := m.makeDrv(t, drv.Spec{Name: "t-quiet", Args: []string{"-c", "echo builder-says-hi; echo x > $out"}})
	r := m.guix(t, nil, nil, "build", "--verbosity=1", d.Path)
	if r.status != 0 || strings.Contains(r.stderr, "builder-says-hi") || !strings.Contains(r.stderr, "building "+d.Path+"...") {
		t.Errorf("verbosity 1: %d %q", r.status, r.stderr)
	}
	d = m.makeDrv(t, drv.Spec{Name: "t-quiet", Args: []string{"-c", "echo builder-says-hi; echo x > $out"}, Nonce: "0"})
	r = m.guix(t, nil, nil, "build", "-v0", d.Path)
	if r.status != 0 || r.stderr != "" {
		t.Errorf("verbosity 0: %d %q", r.status, r.stderr)
	}
}

func TestBuildFailure(t *testing.T) {
	m := newSides(t, 2)[1]
	d := m.makeDrv(t, drv.Spec{Name: "t-fail", Args: []string{"-c", "echo about to fail; echo partial > $out; exit 3"}})
	r := m.guix(t, nil, nil, "build", d.Path)
	want := []string{"builder for `" + d.Path + "' failed with exit code 3\n", "build of " + d.Path + " failed\n",
		"about to fail\n", "guix build: error: build of `" + d.Path + "' failed\n"}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	if r.status != 1 || r.stdout != "" {
		t.Errorf("status %d stdout %q", r.status, r.stdout)
	}
	real, _ := m.store.Real(d.Outputs[0].Path)
	if _, err := os.Lstat(real); err == nil || m.store.Valid(d.Outputs[0].Path) {
		t.Error("failed build left its output")
	}
	// No output produced at all.
	d = m.makeDrv(t, drv.Spec{Name: "t-nothing", Args: []string{"-c", "true"}})
	r = m.guix(t, nil, nil, "build", d.Path)
	if r.status != 1 || !strings.Contains(r.stderr, "failed to produce output path `"+d.Outputs[0].Path+"'") {
		t.Errorf("no output: %d %q", r.status, r.stderr)
	}
}

// Time limits kill the builder's whole process group and say why, as the
// daemon does; the exit status is 1, like real `guix build`.
func TestBuildTimeouts(t *testing.T) {
	m := newSides(t, 2)[1]
	for _, c := range []struct{ opt, want string }{
		{"--timeout=1", "timed out after 1 seconds\n"},
		{"--max-silent-time=1", "timed out after 1 seconds of silence\n"},
	} {
		pidFile := filepath.Join(t.TempDir(), "pid")
		d := m.makeDrv(t, drv.Spec{Name: "t-sleep", Nonce: c.opt,
			Args: []string{"-c", "echo start; sleep 300 & echo $! > " + pidFile + "; wait"}})
		r := m.guix(t, nil, nil, "build", c.opt, d.Path)
		if r.status != 1 || !strings.Contains(r.stderr, "building of `"+d.Path+"' "+c.want) ||
			!strings.Contains(r.stderr, "guix build: error: build of `"+d.Path+"' failed\n") {
			t.Errorf("%s: %d %q", c.opt, r.status, r.stderr)
		}
		b, err := os.ReadFile(pidFile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid == 0 {
			t.Fatalf("builder did not start: %v", err)
		}
		if !gone(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("%s: the builder's child %d survived", c.opt, pid)
		}
	}
}

func TestBuildDependencyAndDrvOnly(t *testing.T) {
	m := newSides(t, 2)[1]
	dep := m.makeDrv(t, drv.Spec{Name: "t-dep", Args: []string{"-c", "echo dep > $out"}})
	top := m.makeDrv(t, drv.Spec{Name: "t-top", InputDrvs: map[string][]string{dep.Path: {"out"}},
		Args: []string{"-c", "echo using " + dep.Outputs[0].Path + " > $out"}})
	root := filepath.Join(t.TempDir(), "drvroot")
	r := m.guix(t, nil, nil, "build", "-d", "-r", root, top.Path)
	if r.status != 0 || r.stdout != top.Path+"\n" || m.store.Valid(top.Outputs[0].Path) {
		t.Fatalf("-d: %d %q %q", r.status, r.stdout, r.stderr)
	}
	if target, _ := os.Readlink(root); target != top.Path {
		t.Errorf("-d -r root -> %q", target)
	}
	if r := m.guix(t, nil, nil, "build", "-d", "-r", root, top.Path); r.status != 1 || !strings.Contains(r.stderr, "failed to create GC root `"+root+"': File exists") {
		t.Errorf("existing root: %d %q", r.status, r.stderr)
	}
	r = m.guix(t, nil, nil, "build", top.Path)
	if r.status != 0 || !strings.Contains(r.stderr, "The following derivations will be built:\n   "+dep.Path+"\n   "+top.Path+"\n") {
		t.Fatalf("build with dependency: %d %q", r.status, r.stderr)
	}
	info, err := m.store.Info(top.Outputs[0].Path)
	if err != nil || len(info.References) != 1 || info.References[0] != dep.Outputs[0].Path {
		t.Errorf("top refs %+v %v", info, err)
	}
	if r := m.guix(t, nil, nil, "build", "-r", filepath.Join(t.TempDir(), "no", "such", "root"), top.Path); r.status != 1 || !strings.Contains(r.stderr, "No such file or directory") {
		t.Errorf("root in a missing dir: %d %q", r.status, r.stderr)
	}
	bogus := drv.StorePath(m.store.Logical, "bogus", "bogus.drv")
	if r := m.guix(t, nil, nil, "build", bogus); r.status != 1 || r.stderr != "guix build: error: path `"+bogus+"' is not valid\n" {
		t.Errorf("invalid drv: %d %q", r.status, r.stderr)
	}
}
