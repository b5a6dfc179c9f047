package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"offload/integration/farm"
	"offload/locking"
	"offload/machines"
)

// runOffload runs the offload binary with the farm's hook environment and returns
// its stdout, stderr and exit status.
func runOffload(t *testing.T, f *farm.Farm, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	cmd := exec.Command(f.Bin.Offload, args...)
	cmd.Env = f.HookEnv()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		status = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), status
}

// checkLines returns the `offload test` lines of one machine, keyed by check name.
func checkLines(t *testing.T, out string, m *farm.Machine) map[string]string {
	t.Helper()
	prefix := "machine '" + m.Name + ":" + itoa(m.Port) + "': "
	lines := map[string]string{}
	var order []string
	for _, l := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(l, prefix)
		if !ok {
			continue
		}
		check, verdict, _ := strings.Cut(rest, ": ")
		lines[check] = verdict
		order = append(order, check)
	}
	want := []string{"ssh", "guix", "daemon", "compression", "path", "import", "export", "slots"}
	if !reflect.DeepEqual(order, want) {
		t.Fatalf("machine %s: checks %q, want %q in that order; output:\n%s", prefix, order, want, out)
	}
	return lines
}

func wantOK(t *testing.T, lines map[string]string, checks ...string) {
	t.Helper()
	for _, c := range checks {
		if !strings.HasPrefix(lines[c], "ok") {
			t.Errorf("%s: %s, want ok", c, lines[c])
		}
	}
}

func wantFailed(t *testing.T, lines map[string]string, check string, fix ...string) {
	t.Helper()
	v := lines[check]
	if !strings.HasPrefix(v, "FAILED: ") {
		t.Errorf("%s: %s, want FAILED", check, v)
		return
	}
	_, got, ok := strings.Cut(v, "; fix: ")
	if !ok {
		t.Errorf("%s: no fix: %s", check, v)
	}
	for _, f := range fix {
		if !strings.Contains(got, f) {
			t.Errorf("%s: fix %q does not say %q", check, got, f)
		}
	}
}

// TestOffloadTestGoodMachines: every check passes on healthy machines, the sample item
// really reached each machine, and nothing came into the local store.
func TestOffloadTestGoodMachines(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	writeMachines(f, nil)
	d := okDrv(f, "farmtest-good")
	before := storeEntries(t, f)
	out, errOut, status := runOffload(t, f, "test")
	if status != 0 {
		t.Fatalf("status %d\n%s%s", status, out, errOut)
	}
	for _, m := range f.Machines {
		lines := checkLines(t, out, m)
		wantOK(t, lines, "ssh", "guix", "daemon", "compression", "path", "import", "export", "slots")
		if lines["compression"] != "ok (transfers use zstd)" {
			t.Errorf("compression: %s", lines["compression"])
		}
		if !strings.Contains(lines["guix"], "GNU Guix") {
			t.Errorf("guix version not shown: %s", lines["guix"])
		}
		if !m.Store.Drv().Valid(d.Path) {
			t.Errorf("%s was not imported on machine %d", d.Path, m.Port)
		}
		if !contains(m.Invocations(), "guix archive --export "+d.Path) {
			t.Errorf("machine %d was not asked to export the item: %q", m.Port, m.Invocations())
		}
	}
	if strings.Count(out, "\n") != 16 {
		t.Errorf("want 16 lines (8 checks x 2 machines):\n%s", out)
	}
	after := storeEntries(t, f)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("local store changed: %q -> %q", before, after)
	}
	assertNoProcessesLeft(t, f)
}

// TestOffloadTestBrokenMachines: each broken machine fails its check with the fix, the
// others still pass theirs, and the exit status says something failed.
func TestOffloadTestBrokenMachines(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 4})
	good, wrongKey, noGuix, refuses := f.Machines[0], f.Machines[1], f.Machines[2], f.Machines[3]
	// wrongKey is pinned to another machine's host key.
	writeMachines(f, func(m *farm.Machine) string {
		if m == wrongKey {
			return "(host-key " + quote(good.Server.HostKey) + ")"
		}
		return ""
	})
	// writeMachines wrote each machine's own host-key first; Guix forbids a field
	// twice, so replace the line instead.
	fixDuplicateHostKey(t, f, wrongKey, good.Server.HostKey)

	// noGuix: every command there runs with a PATH that lacks guix, as for a user
	// whose non-interactive shell does not find it.
	if p, err := lookPathIn("guix", "/usr/bin:/bin"); err == nil {
		t.Fatalf("a guix is installed at %s: cannot simulate a machine without guix", p)
	}
	forceCommand(t, noGuix, `PATH=/usr/bin:/bin; export PATH; exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"`)

	// refuses: its ACL authorizes nobody.
	if err := os.WriteFile(filepath.Join(refuses.Store.Conf, "acl"), []byte("(acl)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	okDrv(f, "farmtest-broken")

	out, errOut, status := runOffload(t, f, "test")
	for _, m := range f.Machines {
		// Each line names its machine once, at its start.
		id := m.Name + ":" + itoa(m.Port)
		for _, l := range strings.Split(out, "\n") {
			if rest, ok := strings.CutPrefix(l, "machine '"+id+"': "); ok && strings.Contains(rest, "'"+id+"'") {
				t.Errorf("the line names %s twice: %s", id, l)
			}
		}
	}
	if status != 1 {
		t.Fatalf("status %d, want 1\n%s%s", status, out, errOut)
	}
	if !strings.Contains(errOut, "checks failed") {
		t.Errorf("stderr does not sum up: %q", errOut)
	}

	wantOK(t, checkLines(t, out, good), "ssh", "guix", "daemon", "compression", "path", "import", "export", "slots")

	l := checkLines(t, out, wrongKey)
	// The mismatch and its fix are said once, by the error itself.
	if !strings.HasPrefix(l["ssh"], "FAILED: its host key") || !strings.Contains(l["ssh"], "is not the host-key pinned") ||
		strings.Count(l["ssh"], "`ssh-keyscan -p "+itoa(wrongKey.Port)+" 127.0.0.1`") != 1 || strings.Contains(l["ssh"], "; fix: ") {
		t.Errorf("ssh failure does not say once that the key does not match and how to fix it: %s", l["ssh"])
	}
	for _, c := range []string{"guix", "daemon", "import", "export"} {
		if !strings.HasPrefix(l[c], "skipped") {
			t.Errorf("wrong key: %s: %s, want skipped", c, l[c])
		}
	}
	wantOK(t, l, "slots")

	l = checkLines(t, out, noGuix)
	wantOK(t, l, "ssh", "slots")
	wantFailed(t, l, "guix", "install Guix on 127.0.0.1", "PATH")
	// The shell's own words, or env's when the machine's daemon-socket makes the command
	// run through env (sshexec: GUIX_DAEMON_SOCKET for a socket that is not the default).
	if !strings.Contains(l["guix"], "not found") && !strings.Contains(l["guix"], "No such file or directory") {
		t.Errorf("guix failure does not show the shell's error: %s", l["guix"])
	}

	l = checkLines(t, out, refuses)
	wantOK(t, l, "ssh", "guix", "daemon", "compression", "path", "slots")
	wantFailed(t, l, "import", "run `guix archive --authorize < "+filepath.Join(f.Local.Conf, "signing-key.pub")+"` on 127.0.0.1")
	if !strings.Contains(l["import"], "unauthorized public key") {
		t.Errorf("import failure does not show the machine's reason: %s", l["import"])
	}
	assertNoProcessesLeft(t, f)
}

// TestOffloadTestUntrustedMachine: a machine whose key our ACL lacks fails the export
// check, with the fix, and nothing it sent is imported.
func TestOffloadTestUntrustedMachine(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	d := okDrv(f, "farmtest-untrusted")
	if err := os.WriteFile(filepath.Join(f.Local.Conf, "acl"), []byte("(acl)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := storeEntries(t, f)
	out, errOut, status := runOffload(t, f, "test", f.MachinesFile(), `^127\.0\.0\.1$`)
	if status != 1 {
		t.Fatalf("status %d, want 1\n%s%s", status, out, errOut)
	}
	l := checkLines(t, out, f.Machines[0])
	wantOK(t, l, "ssh", "guix", "daemon", "compression", "path", "import", "slots")
	wantFailed(t, l, "export", "run `guix archive --authorize < KEY` here, KEY being 127.0.0.1's /etc/guix/signing-key.pub")
	if !strings.Contains(l["export"], "unauthorized public key") || !strings.Contains(l["export"], d.Path) {
		t.Errorf("export failure does not say why and what: %s", l["export"])
	}
	if after := storeEntries(t, f); !reflect.DeepEqual(before, after) {
		t.Errorf("local store changed: %q -> %q", before, after)
	}

	// A name that matches no machine is an error, not an empty success.
	_, errOut, status = runOffload(t, f, "test", f.MachinesFile(), "^nomatch$")
	if status == 0 || !strings.Contains(errOut, "no machine") {
		t.Errorf("no match: status %d %q", status, errOut)
	}
}

// TestOffloadTestSlotsUnusable: when the hook could not create a machine's slot
// directory, the slots check fails and says what to fix.
func TestOffloadTestSlotsUnusable(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	okDrv(f, "farmtest-slots")
	dir := slotDir(f, f.Machines[0])
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, status := runOffload(t, f, "test")
	if status != 1 {
		t.Fatalf("status %d\n%s%s", status, out, errOut)
	}
	l := checkLines(t, out, f.Machines[0])
	wantOK(t, l, "ssh", "guix", "daemon", "import", "export")
	wantFailed(t, l, "slots", "make "+filepath.Join(f.State, "offload")+" a directory")
}

// TestOffloadMachines: every warning of the list, the errors, and the exact JSON.
func TestOffloadMachines(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 0})
	dir := t.TempDir()
	key := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("key\n"), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	good, open := key("good", 0o600), key("open", 0o644)
	missing := filepath.Join(dir, "missing")
	file := filepath.Join(dir, "machines.scm")
	src := `;; every warning
(define k "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x")
(list
 (build-machine (name "old") (system "x86_64-linux") (user "u") (host-key k) (private-key "` + good + `"))
 (build-machine (name "nokey") (systems '("x86_64-linux")) (user "u") (private-key "` + good + `"))
 (build-machine (name "open") (systems '("x86_64-linux")) (user "u") (host-key k) (private-key "` + open + `"))
 (build-machine (name "gone") (systems '("x86_64-linux")) (user "u") (host-key k) (private-key "` + missing + `"))
 (build-machine (name "dup") (systems '("x86_64-linux")) (user "u") (host-key k) (private-key "` + good + `") (parallel-builds 2))
 (build-machine (name "dup") (systems '("aarch64-linux")) (user "u") (host-key k) (private-key "` + good + `") (parallel-builds 4))
 (build-machine (name "odd") (port 2222) (systems '("x86_64-linux" "i686-linux")) (user "u") (host-key k) (private-key "` + good + `")
   (parallel-builds 0) (speed -1.) (overload-threshold 1.5) (features '("kvm")) (ssh-options '("-4"))
   (compression "none") (compression-level 9) (daemon-socket "/run/guix.sock"))
 (build-machine (name "nothresh") (systems '("x86_64-linux")) (user "u") (host-key k) (private-key "` + good + `") (overload-threshold #f)))
`
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, status := runOffload(t, f, "machines", file)
	if status != 1 {
		t.Fatalf("status %d, want 1 (missing key)\n%s%s", status, out, errOut)
	}
	for _, want := range []string{
		`warning: the 'system' field is deprecated`,
		`warning: build-machine 'nokey' has no host-key field`,
		`warning: machine 'open:22': private-key ` + open + ` (owner uid 0) has mode 0644`,
		`error: machine 'gone:22': private-key ` + missing + ` does not exist`,
		`warning: machine 'dup:22' is also defined at`,
		`warning: parallel-builds is 0`,
		`warning: speed is -1`,
		`warning: overload-threshold is 1.5, outside [0, 1]`,
	} {
		if os.Geteuid() != 0 {
			want = strings.Replace(want, " (owner uid 0)", "", 1)
		}
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, file+":4:2: (name \"old\") (port 22) (systems '(\"x86_64-linux\")) (user \"u\") (private-key \""+good+"\") (host-key \"ssh-ed25519 ") {
		t.Errorf("first machine not shown with its fields resolved:\n%s", out)
	}
	if !strings.Contains(out, `(parallel-builds 1) (speed 1.0) (features '()) (overload-threshold 0.8) (compression "zlib@openssh.com,zlib") (compression-level 3) (daemon-socket "/var/guix/daemon-socket/socket") (ssh-options '())`) {
		t.Errorf("defaults not shown:\n%s", out)
	}
	if !strings.Contains(out, "(overload-threshold #f)") {
		t.Errorf("#f threshold not shown:\n%s", out)
	}
	if !strings.Contains(out, `(name "nokey") (port 22) (systems '("x86_64-linux")) (user "u") (private-key "`+good+`") (parallel-builds 1)`) {
		t.Errorf("a machine without host-key is not shown without it:\n%s", out)
	}
	if !strings.Contains(errOut, "1 error") {
		t.Errorf("stderr: %q", errOut)
	}

	out, errOut, status = runOffload(t, f, "machines", "--json", file)
	if status != 1 {
		t.Fatalf("--json: status %d\n%s%s", status, out, errOut)
	}
	if !strings.Contains(errOut, "does not exist") {
		t.Errorf("--json: the error is not on stderr: %q", errOut)
	}
	// The keys, in order, exactly as the issue lists them.
	dec := json.NewDecoder(strings.NewReader(out))
	var raw []json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("--json output is not a JSON array: %v\n%s", err, out)
	}
	if len(raw) != 8 {
		t.Fatalf("%d machines, want 8", len(raw))
	}
	wantKeys := []string{"name", "port", "systems", "user", "private-key", "host-key", "parallel-builds", "speed",
		"features", "overload-threshold", "compression", "compression-level", "daemon-socket", "ssh-options"}
	for i, r := range raw {
		if keys := objectKeys(t, r); !reflect.DeepEqual(keys, wantKeys) {
			t.Errorf("machine %d: keys %q, want %q", i, keys, wantKeys)
		}
	}
	var objs []map[string]any
	if err := json.Unmarshal([]byte(out), &objs); err != nil {
		t.Fatal(err)
	}
	wantOdd := map[string]any{
		"name": "odd", "port": 2222.0, "systems": []any{"x86_64-linux", "i686-linux"}, "user": "u", "private-key": good,
		"host-key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x", "parallel-builds": 0.0,
		"speed": -1.0, "features": []any{"kvm"}, "overload-threshold": 1.5, "compression": "none", "compression-level": 9.0,
		"daemon-socket": "/run/guix.sock", "ssh-options": []any{"-4"},
	}
	if !reflect.DeepEqual(objs[6], wantOdd) {
		t.Errorf("odd:\n got %v\nwant %v", objs[6], wantOdd)
	}
	wantDefaults := map[string]any{
		"name": "old", "port": 22.0, "systems": []any{"x86_64-linux"}, "user": "u", "private-key": good,
		"host-key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x", "parallel-builds": 1.0,
		"speed": 1.0, "features": []any{}, "overload-threshold": 0.8, "compression": "zlib@openssh.com,zlib",
		"compression-level": 3.0, "daemon-socket": "/var/guix/daemon-socket/socket", "ssh-options": []any{},
	}
	if !reflect.DeepEqual(objs[0], wantDefaults) {
		t.Errorf("defaults:\n got %v\nwant %v", objs[0], wantDefaults)
	}
	if objs[7]["overload-threshold"] != nil || objs[1]["host-key"] != nil {
		t.Errorf("#f threshold or absent host-key is not null: %v %v", objs[7]["overload-threshold"], objs[1]["host-key"])
	}

	// A clean file exits 0; a broken one names the place.
	clean := filepath.Join(dir, "clean.scm")
	os.WriteFile(clean, []byte(`(list (build-machine (name "a") (systems '("x86_64-linux")) (user "u") (host-key "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDlBDqGhpEeOa4l+lZ7PG+t3cLBFcIbES4jrzWDXWA5x") (private-key "`+good+`")))`), 0o644)
	if out, errOut, status := runOffload(t, f, "machines", clean); status != 0 || strings.Contains(out, "warning") {
		t.Errorf("clean file: status %d\n%s%s", status, out, errOut)
	}
	broken := filepath.Join(dir, "broken.scm")
	os.WriteFile(broken, []byte("(list (build-machine (name \"a\")\n"), 0o644)
	if _, errOut, status := runOffload(t, f, "machines", broken); status == 0 || !strings.Contains(errOut, broken+":") {
		t.Errorf("broken file: status %d %q", status, errOut)
	}
}

func objectKeys(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", raw)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// TestOffloadStatus: two machines, one stopped, one with a slot held by a build: the
// table and the JSON show both, the holder, and the facts of the live one.
func TestOffloadStatus(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2, ParallelBuilds: 2})
	writeMachines(f, nil)
	up, down := f.Machines[0], f.Machines[1]
	down.Server.Stop()
	since := time.Now().Add(-time.Hour).Truncate(time.Second)
	state := machines.State{Dir: filepath.Join(f.State, "offload")}
	if err := state.RecordFailure(down.StateKey(), errors.New("connection refused"), since); err != nil {
		t.Fatal(err)
	}
	d := okDrv(f, "status")
	slot, n, err := locking.AcquireSlot(slotDir(f, up), 2, "building "+d.Path)
	if err != nil || slot == nil {
		t.Fatalf("slot: %v", err)
	}
	defer slot.Release()

	out, errOut, status := runOffload(t, f, "status")
	if status != 0 {
		t.Fatalf("status %d\n%s%s", status, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	header := regexp.MustCompile(`^MACHINE +STATE +KERNEL +ARCH +HOST +CORES +LOAD +FREE +CLOCK +GUIX +SLOTS$`)
	if !header.MatchString(lines[0]) {
		t.Fatalf("header: %q", lines[0])
	}
	upID, downID := up.Name+":"+itoa(up.Port), down.Name+":"+itoa(down.Port)
	kernel := strings.TrimSpace(localOutput(t, "uname", "-sr"))
	arch := strings.TrimSpace(localOutput(t, "uname", "-m"))
	cores := strings.TrimSpace(localOutput(t, "nproc"))
	upRow := regexp.MustCompile(`^` + regexp.QuoteMeta(upID) + ` +up +` + regexp.QuoteMeta(kernel) + ` +` + regexp.QuoteMeta(arch) +
		` +\S+ +` + cores + ` +[01]\.\d\d +[\d.]+ [KMGT]iB +[+-]\d+\.\ds +1\.4\.0 +1/2$`)
	downRow := regexp.MustCompile(`^` + regexp.QuoteMeta(downID) + ` +DOWN since ` + regexp.QuoteMeta(since.Local().Format("2006-01-02 15:04:05")) +
		` +- +- +- +- +- +- +- +- +0/2$`)
	if !upRow.MatchString(lines[1]) {
		t.Errorf("row of the live machine:\n%q\n%s", lines[1], out)
	}
	if !downRow.MatchString(lines[2]) {
		t.Errorf("row of the stopped machine:\n%q\n%s", lines[2], out)
	}
	// Columns line up: each header word starts at the same offset in every row.
	if strings.Index(lines[0], "KERNEL") != strings.Index(lines[1], kernel) {
		t.Errorf("columns are not aligned:\n%s", out)
	}
	holder := "machine '" + upID + "': slot " + itoa(n) + ": process " + itoa(os.Getpid()) + ": building " + d.Path
	if !contains(lines, holder) {
		t.Errorf("slot holder line %q missing:\n%s", holder, out)
	}
	if !contains(lines, "machine '"+downID+"': unreachable: ") {
		t.Errorf("no reason for the stopped machine:\n%s", out)
	}

	out, errOut, status = runOffload(t, f, "status", "--json")
	if status != 0 {
		t.Fatalf("--json: status %d\n%s%s", status, out, errOut)
	}
	var sts []struct {
		Machine        string     `json:"machine"`
		Reachable      bool       `json:"reachable"`
		Error          string     `json:"error"`
		DownSince      *time.Time `json:"down_since"`
		Kernel         string     `json:"kernel"`
		Architecture   string     `json:"architecture"`
		HostName       string     `json:"host_name"`
		Cores          int        `json:"cores"`
		NormalizedLoad *float64   `json:"normalized_load"`
		FreeBytes      *int64     `json:"free_bytes"`
		ClockOffset    *float64   `json:"clock_offset_seconds"`
		GuixVersion    string     `json:"guix_version"`
		ParallelBuilds int        `json:"parallel_builds"`
		SlotsInUse     int        `json:"slots_in_use"`
		Slots          []struct {
			Slot       int    `json:"slot"`
			PID        int    `json:"pid"`
			Derivation string `json:"derivation"`
		} `json:"slots"`
	}
	if err := json.Unmarshal([]byte(out), &sts); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(sts) != 2 {
		t.Fatalf("%d machines:\n%s", len(sts), out)
	}
	u, dn := sts[0], sts[1]
	host, _ := os.Hostname()
	if u.Machine != upID || !u.Reachable || u.Kernel != kernel || u.Architecture != arch || u.HostName != host ||
		itoa(u.Cores) != cores || u.NormalizedLoad == nil || u.FreeBytes == nil || *u.FreeBytes <= 0 ||
		u.ClockOffset == nil || u.GuixVersion != "guix (GNU Guix) 1.4.0" {
		t.Errorf("live machine: %+v\n%s", u, out)
	}
	// Same host, same clock: the offset is the time the answer took, well under 2 s.
	if u.ClockOffset != nil && (*u.ClockOffset > 0.5 || *u.ClockOffset < -2) {
		t.Errorf("clock offset %v s between a machine and itself", *u.ClockOffset)
	}
	if u.ParallelBuilds != 2 || u.SlotsInUse != 1 || len(u.Slots) != 1 || u.Slots[0].PID != os.Getpid() ||
		u.Slots[0].Derivation != d.Path || u.Slots[0].Slot != n {
		t.Errorf("slots of the live machine: %+v", u)
	}
	if dn.Machine != downID || dn.Reachable || dn.Error == "" || dn.DownSince == nil || !dn.DownSince.Equal(since) ||
		dn.SlotsInUse != 0 || dn.Slots == nil {
		t.Errorf("stopped machine: %+v\n%s", dn, out)
	}
	// The status command only reads the hook's state: the stopped machine's record
	// is as the hook left it.
	h, err := state.Health(down.StateKey())
	if err != nil || h.Failures != 1 || !h.DownSince.Equal(since) {
		t.Errorf("state changed by status: %+v %v", h, err)
	}
	assertNoProcessesLeft(t, f)
}

// TestOffloadStatusWatch: --watch refreshes until interrupted, and an interrupt is a
// normal exit.
func TestOffloadStatusWatch(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	cmd := exec.Command(f.Bin.Offload, "status", "--json", "--watch", "1")
	cmd.Env = f.HookEnv()
	pr, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(pr)
	for i := 0; i < 2; i++ {
		if !sc.Scan() {
			t.Fatalf("refresh %d: no line: %v %q", i, sc.Err(), stderr.String())
		}
		var sts []map[string]any
		if err := json.Unmarshal(sc.Bytes(), &sts); err != nil || len(sts) != 1 || sts[0]["reachable"] != true {
			t.Fatalf("refresh %d: %v %s", i, err, sc.Bytes())
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	io.Copy(io.Discard, pr)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after an interrupt: %v %q", err, stderr.String())
	}
}

// assertNoProcessesLeft: test and status leave no ssh behind (no shared connection
// masters, no stray clients).
func assertNoProcessesLeft(t *testing.T, f *farm.Farm) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "ssh" && strings.Contains(string(b), f.State) {
			t.Errorf("ssh left running: pid %s: %q", e.Name(), args)
		}
	}
}

func localOutput(t *testing.T, argv ...string) string {
	t.Helper()
	b, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		t.Fatalf("%s: %v", argv, err)
	}
	return string(b)
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

func lookPathIn(prog, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, prog)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

// forceCommand makes m's sshd run command for every session of the client key (the
// original command in $SSH_ORIGINAL_COMMAND), by the authorized_keys option.
func forceCommand(t *testing.T, m *farm.Machine, command string) {
	t.Helper()
	file := filepath.Join(m.Server.Dir, "authorized_keys")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	line := `command="` + strings.ReplaceAll(command, `"`, `\"`) + `" ` + string(b)
	if err := os.WriteFile(file, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fixDuplicateHostKey keeps only the host-key given in the extra fields of m's record.
func fixDuplicateHostKey(t *testing.T, f *farm.Farm, m *farm.Machine, key string) {
	t.Helper()
	b, err := os.ReadFile(f.MachinesFile())
	if err != nil {
		t.Fatal(err)
	}
	own := "  (host-key " + quote(m.Server.HostKey) + ")\n"
	s := strings.Replace(string(b), own, "", 1)
	if s == string(b) {
		t.Fatalf("machine %d's host-key line not found in:\n%s", m.Port, b)
	}
	if _, _, err := machines.Parse("x", []byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.MachinesFile(), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
