package main

import (
	"os"
	"path/filepath"
	"testing"
)

// FAKEGUIX_COSTS reaches each sub-command with the delay of its real counterpart; "dry"
// reports the delay without sleeping (no timing is asserted: speed lives in benchmarks).
func TestStartCosts(t *testing.T) {
	a := newSides(t, 1)[0]
	log := filepath.Join(t.TempDir(), "costs.log")
	env := []string{"FAKEGUIX_COSTS=dry", "FAKEGUIX_COSTS_LOG=" + log}
	a.guix(t, nil, env, "archive", "--missing")
	a.guix(t, nil, env, "archive", "--export", a.store.Logical+"/00000000000000000000000000000000-none")
	a.guix(t, nil, env, "archive", "--import")
	a.guix(t, nil, env, "build", "--no-grafts")
	a.guix(t, nil, env, "--version")
	a.guix(t, nil, env, "repl", "--", "/dev/null")
	a.guix(t, nil, env, "describe")
	a.guix(t, nil, nil, "--version") // off: nothing reported
	got, _ := os.ReadFile(log)
	want := "archive --missing 170ms\narchive --export 322ms\narchive --import 220ms\nbuild 157ms\n--version 134ms\nrepl 150ms\ndescribe 134ms\n"
	if string(got) != want {
		t.Errorf("costs reported:\n%s\nwant:\n%s", got, want)
	}
}
