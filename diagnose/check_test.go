package diagnose

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"offload/hook"

	"offload/machines"
	"offload/sshexec"
)

func TestCheckString(t *testing.T) {
	cases := []struct {
		c    Check
		want string
	}{
		{Check{Machine: "a:22", Name: "ssh", Status: CheckOK}, "machine 'a:22': ssh: ok"},
		{Check{Machine: "a:2222", Name: "guix", Status: CheckOK, Detail: "guix (GNU Guix) 1.4.0\n"}, "machine 'a:2222': guix: ok (guix (GNU Guix) 1.4.0)"},
		{Check{Machine: "a:22", Name: "import", Status: CheckFailed, Detail: "refused:\n  guix archive: error: unauthorized public key\n", Fix: "run x on a"},
			"machine 'a:22': import: FAILED: refused: / guix archive: error: unauthorized public key; fix: run x on a"},
		{Check{Machine: "a:22", Name: "daemon", Status: CheckSkipped, Detail: "cannot connect"}, "machine 'a:22': daemon: skipped: cannot connect"},
		// A failure whose message says its own fix has no second one.
		{Check{Machine: "a:22", Name: "ssh", Status: CheckFailed, Detail: "no host-key in machines.scm: put one in host-key"}, "machine 'a:22': ssh: FAILED: no host-key in machines.scm: put one in host-key"},
	}
	for _, c := range cases {
		if got := c.c.String(); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
		if strings.Contains(c.c.String(), "\n") {
			t.Errorf("not one line: %q", c.c.String())
		}
	}
}

// TestSSHFix: a fix is said once. The errors that carry their fix in their own message
// (a missing or mismatched host-key, a missing private key) get no second one; the
// others get what to do.
func TestSSHFix(t *testing.T) {
	m := &machines.Machine{Name: "build1", Port: 2222, User: "bob", PrivateKey: "/root/.ssh/id_ed25519"}
	missingKey := sshexec.CheckPrivateKey(filepath.Join(t.TempDir(), "id_ed25519"))
	cases := []struct {
		err        error
		want       string // "" for no fix
		errAlready string // what the error's own message says instead
	}{
		{&sshexec.NoHostKeyError{Machine: "build1", Port: 2222}, "", "`ssh-keyscan -p 2222 build1`"},
		{&sshexec.UnreachableError{Machine: "build1", Port: 2222, HostKeyMismatch: true, PinnedType: "ssh-ed25519"}, "", "`ssh-keyscan -p 2222 build1`"},
		{missingKey, "", "ssh-keygen -t ed25519 -f "},
		{&sshexec.UnreachableError{Machine: "build1", StderrTail: "bob@build1: Permission denied (publickey)."}, "add /root/.ssh/id_ed25519.pub to ~bob/.ssh/authorized_keys on build1", ""},
		{&sshexec.UnreachableError{Machine: "build1", StderrTail: "ssh: connect to host build1 port 2222: Connection refused"}, "check that build1 is up and that sshd listens on port 2222", ""},
	}
	for _, c := range cases {
		got := sshFix(m, c.err)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%v:\n got %q\nwant %q", c.err, got, c.want)
		}
		if !strings.Contains(c.err.Error(), c.errAlready) {
			t.Errorf("%q does not say %q", c.err, c.errAlready)
		}
	}
}

// smallItems picks small regular files that are store items, .drv first, and never
// lock files, temporary entries or directories.
func TestSmallItems(t *testing.T) {
	store := t.TempDir()
	write := func(name string, size int) string {
		p := filepath.Join(store, name)
		if err := os.WriteFile(p, make([]byte, size), 0o444); err != nil {
			t.Fatal(err)
		}
		return p
	}
	h := "0123456789abcdfghijklmnpqrsvwxyz"
	drv := write(h+"-hello.drv", 900)
	txt := write(strings.Replace(h, "0", "1", 1)+"-text", 10)
	write(strings.Replace(h, "0", "2", 1)+"-big.drv", 100<<10)
	write(strings.Replace(h, "0", "3", 1)+"-x.lock", 0)
	write(".offload-tmp-abc", 10)
	write("not-a-store-name", 10)
	os.Mkdir(filepath.Join(store, strings.Replace(h, "0", "4", 1)+"-dir"), 0o755)

	got := smallItems(store, 5)
	if want := []string{drv, txt}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := smallItems(store, 1); !slices.Equal(got, []string{drv}) {
		t.Errorf("n=1: got %q", got)
	}
	if got := smallItems(filepath.Join(store, "none"), 5); got != nil {
		t.Errorf("missing store: %q", got)
	}
}

// The slots check takes and gives back a free slot, accepts busy ones, and fails with
// the fix when the directory cannot be made.
func TestCheckSlots(t *testing.T) {
	state := t.TempDir()
	c := &Checker{Conf: hook.Config{StateDir: state}}
	m := &machines.Machine{Name: "b", Port: 22, ParallelBuilds: 1}
	if ck := c.checkSlots(m); ck.Status != CheckOK || !strings.Contains(ck.Detail, "a slot is free") {
		t.Fatalf("%v", ck)
	}
	slot, _, err := acquireSlotForTest(filepath.Join(state, "b:22"))
	if err != nil || slot == nil {
		t.Fatal(err)
	}
	if ck := c.checkSlots(m); ck.Status != CheckOK || !strings.Contains(ck.Detail, "all in use") {
		t.Fatalf("busy: %v", ck)
	}
	slot.Release()

	if err := os.WriteFile(filepath.Join(state, "c:22"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ck := c.checkSlots(&machines.Machine{Name: "c", Port: 22})
	if ck.Status != CheckFailed || !strings.Contains(ck.Fix, state) {
		t.Fatalf("unusable: %v", ck)
	}
}

func TestCompressionDetail(t *testing.T) {
	m := &machines.Machine{Name: "build1"}
	cases := []struct {
		has  map[string]bool
		want string
	}{
		{map[string]bool{"zstd": true, "gzip": true}, "transfers use zstd"},
		{map[string]bool{"gzip": true}, "transfers use gzip, slower than zstd: install zstd on build1"},
		{map[string]bool{}, "neither zstd nor gzip found: transfers are uncompressed, slow on a slow link; install zstd on build1"},
	}
	for _, c := range cases {
		if got := compressionDetail(m, c.has); got != c.want {
			t.Errorf("compressionDetail(%v) = %q, want %q", c.has, got, c.want)
		}
	}
}

// TestChecksConnectAsTheHook: offload test and offload status run ssh with the argv the
// hook's session uses (ssh compression off while offload compresses the streams itself),
// so that they check the connection the hook makes.
func TestChecksConnectAsTheHook(t *testing.T) {
	r := &sshexec.Runner{StateDir: t.TempDir(), SSH: "ssh"}
	m := &machines.Machine{Name: "build1", Port: 2222, User: "bob", Compression: "zlib@openssh.com,zlib",
		HostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}
	for _, comp := range []string{"", "zstd", "ssh"} {
		conf := hook.Config{Compression: comp}
		hookArgv, err := r.SSHArgv(hook.SSHTarget(conf, m), []string{"true"})
		if err != nil {
			t.Fatal(err)
		}
		c := &Checker{Conf: conf, Runner: r}
		testArgv, err := r.SSHArgv(c.target(m), []string{"true"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(hookArgv, testArgv) {
			t.Errorf("OFFLOAD_COMPRESSION=%q:\nhook %q\ntest %q", comp, hookArgv, testArgv)
		}
		statusArgv, err := r.SSHArgv(StatusOptions{Compression: comp}.target(m), []string{"true"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(hookArgv, statusArgv) {
			t.Errorf("OFFLOAD_COMPRESSION=%q:\nhook   %q\nstatus %q", comp, hookArgv, statusArgv)
		}
		if want := map[bool]string{true: "Compression=yes", false: "Compression=no"}[comp == "ssh"]; !slices.Contains(testArgv, want) {
			t.Errorf("OFFLOAD_COMPRESSION=%q: %q lacks %s", comp, testArgv, want)
		}
	}
}
