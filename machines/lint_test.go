package machines

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLintFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask may have narrowed it
			t.Fatal(err)
		}
		return p
	}
	good := write("good", 0o600)
	open := write("open", 0o644)
	groupOnly := write("group", 0o640)
	missing := filepath.Join(dir, "missing")
	sub := filepath.Join(dir, "adir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	src := `(list
 (build-machine (name "good") (user "u") (systems '("x")) (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x") (private-key "` + good + `"))
 (build-machine (name "open") (user "u") (systems '("x")) (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x") (private-key "` + open + `"))
 (build-machine (name "group") (user "u") (systems '("x")) (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x") (private-key "` + groupOnly + `"))
 (build-machine (name "missing") (user "u") (systems '("x")) (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x") (private-key "` + missing + `"))
 (build-machine (name "missing2") (user "u") (systems '("x")) (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x") (private-key "` + missing + `"))
 (build-machine (name "dir") (user "u") (systems '("x")) (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x") (private-key "` + sub + `")))`
	ms, ws, err := Parse("m.scm", []byte(src))
	if err != nil || len(ws) != 0 {
		t.Fatalf("parse: %v %v", err, ws)
	}
	warns, errs := LintFiles(ms)

	if len(warns) != 2 {
		t.Fatalf("want 2 warnings (open, group), got %q", warns)
	}
	for i, name := range []string{"open", "group"} {
		w := warns[i]
		if w.Pos != ms[i+1].Pos || !strings.Contains(w.Msg, "machine '"+name+":22'") || !strings.Contains(w.Msg, "chmod 600") {
			t.Errorf("warning %d: %s", i, w)
		}
	}
	if !strings.Contains(warns[0].Msg, "0644") || !strings.Contains(warns[1].Msg, "0640") {
		t.Errorf("warnings do not give the modes: %q", warns)
	}
	// The missing key is reported once, at the first machine naming it.
	if len(errs) != 2 {
		t.Fatalf("want 2 errors (missing once, dir), got %q", errs)
	}
	if errs[0].Pos != ms[3].Pos || !strings.Contains(errs[0].Msg, missing+" does not exist") {
		t.Errorf("missing key: %v", errs[0])
	}
	if errs[1].Pos != ms[5].Pos || !strings.Contains(errs[1].Msg, "not a regular file") {
		t.Errorf("directory as key: %v", errs[1])
	}
	if !strings.HasPrefix(errs[0].Error(), "m.scm:") {
		t.Errorf("error does not name the file: %v", errs[0])
	}
}

func TestLintFilesNoKey(t *testing.T) {
	ms := []*Machine{{Name: "a", Port: 22}}
	warns, errs := LintFiles(ms)
	if len(errs) != 0 || len(warns) != 1 || !strings.Contains(warns[0].Msg, "no private-key") {
		t.Fatalf("%q %q", warns, errs)
	}
}

// A key this user cannot read is an error for root (the hook's user) and only a
// warning for others. Root reads every file, so the refusal is exercised only when
// the tests run as another user; the verdict for each user is checked directly.
func TestLintUnreadable(t *testing.T) {
	m := &Machine{Name: "a", Port: 22}
	if w, e := unreadable(m, "/k", 0); w != "" || !strings.Contains(e, "permission denied") {
		t.Errorf("root: %q %q", w, e)
	}
	if w, e := unreadable(m, "/k", 1000); e != "" || !strings.Contains(w, "uid 1000") {
		t.Errorf("user: %q %q", w, e)
	}
	if os.Geteuid() == 0 {
		return
	}
	p := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(p, nil, 0o000); err != nil {
		t.Fatal(err)
	}
	warns, errs := LintFiles([]*Machine{{Name: "a", Port: 22, PrivateKey: p}})
	if len(errs) != 0 || len(warns) != 1 || !strings.Contains(warns[0].Msg, "cannot be read") {
		t.Fatalf("%q %q", warns, errs)
	}
}

func TestLintHostKey(t *testing.T) {
	// A real ed25519 public key line (ssh-keygen output).
	good := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x root@host"
	for _, c := range []struct{ key, want string }{
		{good, ""},
		{"AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x", "not a public key line"},
		{"ssh-ed25519 AAAA!!", "invalid base64"},
		{"ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x", "does not hold a key of type ssh-rsa"},
		{"ssh-ed25519 AAA=", "truncated"},
	} {
		got := checkHostKey(c.key)
		if c.want == "" && got != "" || c.want != "" && !strings.Contains(got, c.want) {
			t.Errorf("%q: %q, want %q", c.key, got, c.want)
		}
	}
	key := filepath.Join(t.TempDir(), "k")
	os.WriteFile(key, nil, 0o600)
	_, errs := LintFiles([]*Machine{{Name: "a", Port: 22, PrivateKey: key, HostKey: "ssh-ed25519 AAAA"}})
	if len(errs) != 1 || !strings.Contains(errs[0].Msg, "machine 'a:22': host-key of type ssh-ed25519") {
		t.Errorf("%v", errs)
	}
}
