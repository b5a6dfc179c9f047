package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"offload/integration/drv"
)

// setup makes a store with a derivation depending on a source item and a
// hook script; the script sees the derivation's output (physical) path as
// $OUT and records its stdin in $REC.
func setup(t *testing.T, script string) (drv.Store, *drv.Derivation, []string, string) {
	t.Helper()
	dir := t.TempDir()
	st := drv.Store{Logical: filepath.Join(dir, "store"), Physical: filepath.Join(dir, "store"), DB: filepath.Join(dir, "db")}
	src, err := st.AddItem("src", map[string]string{"": "source"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.Make(drv.Spec{Name: "t-ok", Builder: "/bin/sh", InputSrcs: []string{src}, Features: []string{"kvm"}})
	if err != nil {
		t.Fatal(err)
	}
	hook := filepath.Join(dir, "hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(dir, "rec")
	env := append(st.Env(), "PATH=/usr/bin:/bin", "OUT="+d.Outputs[0].Path, "SRC="+src, "REC="+rec)
	return st, d, env, rec
}

func runDaemon(t *testing.T, st drv.Store, env []string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v
			}
		}
		return ""
	}
	status := run(context.Background(), args, &out, &errb, getenv, env)
	return status, out.String(), errb.String()
}

func TestBuiltAndRegistered(t *testing.T) {
	st, d, env, rec := setup(t, `exec 3>&1
IFS= read -r req; echo "$req" > "$REC"; echo "hook says hi" >&2; echo "# accept"
IFS= read -r inputs; IFS= read -r outputs; echo "$inputs" >> "$REC"; echo "$outputs" >> "$REC"
echo "building on the remote" >&4
echo "uses $SRC" > "$OUT"
`)
	hook := filepath.Join(filepath.Dir(rec), "hook")
	status, out, errOut := runDaemon(t, st, env, "-hook", hook, "build", d.Path)
	if status != 0 || !strings.Contains(out, "built: "+d.Path+"\n"+d.Outputs[0].Path+"\n") {
		t.Fatalf("status %d\n%s\n%s", status, out, errOut)
	}
	if !strings.Contains(errOut, "hook: hook says hi\n") || !strings.Contains(out, "log: building on the remote\n") {
		t.Errorf("relay: %q %q", out, errOut)
	}
	b, _ := os.ReadFile(rec)
	inputs, _ := st.BuildInputs(d)
	want := "0 x86_64-linux " + d.Path + " kvm\n" + strings.Join(inputs, " ") + " \n" + d.Outputs[0].Path + " \n"
	if string(b) != want {
		t.Errorf("hook read\n%q\nwant\n%q", b, want)
	}
	info, err := st.Info(d.Outputs[0].Path)
	if err != nil || len(info.References) != 1 || info.Deriver != d.Path {
		t.Errorf("registered %+v %v", info, err)
	}
}

func TestStatuses(t *testing.T) {
	for _, c := range []struct {
		name, script string
		args         []string
		status       int
		want         string
	}{
		{"decline", `read req; echo "# decline"; read x`, nil, exitDeclined, "declined: would build locally"},
		{"postpone-then-accept", `read req; echo "# postpone"; read req; echo "# accept"; read a; read b; echo x > "$OUT"`,
			[]string{"-retry", "10ms"}, exitBuilt, "built: "},
		{"failed", `read req; echo "# accept"; read a; read b; exit 100`, nil, exitFailed, "build failed (permanent)"},
		{"timeout-status", `read req; echo "# accept"; read a; read b; exit 101`, nil, exitTimedOut, "timed out"},
		{"transient", `read req; echo "# accept"; read a; read b; exit 1`, nil, exitHookFail, "hook failed (transient): exit status 1"},
		{"no-output", `read req; echo "# accept"; read a; read b; exit 0`, nil, exitHookFail, "failed to produce output path"},
		{"bad-reply", `read req; echo "# maybe"`, nil, exitHookFail, ""},
		{"silent", `read req; echo "# accept"; read a; read b; exec sleep 60`, []string{"-max-silent", "1"}, exitTimedOut,
			"timed out after 1 seconds of silence"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, d, env, rec := setup(t, c.script)
			args := append(append([]string{"-hook", filepath.Join(filepath.Dir(rec), "hook")}, c.args...), "build", d.Path)
			status, out, errOut := runDaemon(t, st, env, args...)
			if status != c.status || !strings.Contains(out, c.want) {
				t.Errorf("status %d, want %d; stdout %q stderr %q", status, c.status, out, errOut)
			}
			if c.status != exitBuilt && st.Valid(d.Outputs[0].Path) {
				t.Error("output registered after a failure")
			}
		})
	}
}
