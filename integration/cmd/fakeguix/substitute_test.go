package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSubstitutes: `guix build --dry-run ITEM...` of plain items lists nothing, as real
// Guix's build-notifier, and installs nothing; `guix build --keep-going`
// installs them verified, with their references, and fails (status 1, the daemon's
// message) for a truncated substitute and an item without one, which stay invalid.
func TestSubstitutes(t *testing.T) {
	sides := newSides(t, 2)
	server, machine := sides[0], sides[1]
	machine.authorize(t, server)
	subs := t.TempDir()
	a := server.addItem(t, "sub-a", map[string]string{"f": "aaa"})
	b := server.addItem(t, "sub-b", map[string]string{"f": "uses " + a}, a)
	broken := server.addItem(t, "sub-broken", map[string]string{"f": strings.Repeat("x", 4096)})
	none := server.addItem(t, "sub-none", map[string]string{"f": "no substitute"})
	for _, p := range []string{a, b, broken} {
		r := server.guix(t, nil, nil, "archive", "--export", p)
		if r.status != 0 {
			t.Fatalf("export: %s", r.stderr)
		}
		bundle := []byte(r.stdout)
		if p == broken {
			bundle = bundle[:len(bundle)/2]
		}
		if err := os.WriteFile(filepath.Join(subs, filepath.Base(p)[:32]), bundle, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"FAKEGUIX_SUBSTITUTES=" + subs}
	all := []string{a, b, broken, none}

	dry := machine.guix(t, nil, env, append([]string{"build", "--dry-run"}, all...)...)
	if dry.status != 0 || dry.stderr != "" || dry.stdout != "" {
		t.Fatalf("dry run: status %d, stderr:\n%s", dry.status, dry.stderr)
	}
	for _, p := range all {
		if machine.store.Valid(p) {
			t.Fatalf("the dry run installed %s", p)
		}
	}

	r := machine.guix(t, nil, env, append([]string{"build", "--keep-going"}, all...)...)
	if r.status != 1 || !strings.Contains(r.stderr, "substitution of "+broken+" failed") ||
		!strings.Contains(r.stderr, "guix build: error: build of `"+broken+"', `"+none+"' failed") {
		t.Fatalf("build: status %d, stderr:\n%s", r.status, r.stderr)
	}
	for _, p := range []string{a, b} {
		real, _ := machine.store.Real(p)
		if !machine.store.Valid(p) || !bytes.Equal(dump(t, real), dump(t, p)) {
			t.Errorf("%s not substituted as it is on the server", p)
		}
	}
	if info, err := machine.store.Info(b); err != nil || len(info.References) != 1 || info.References[0] != a {
		t.Errorf("references of %s: %+v, %v", b, info, err)
	}
	for _, p := range []string{broken, none} {
		if machine.store.Valid(p) {
			t.Errorf("%s is valid on the machine", p)
		}
	}
	for _, e := range storeEntries(t, machine.store) {
		if strings.Contains(e, ".offload-tmp-") || strings.Contains(e, "sub-broken") {
			t.Errorf("left behind: %s", e)
		}
	}
}
