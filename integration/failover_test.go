package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"offload/integration/drv"
	"offload/integration/farm"
)

// TestFailoverBeforeBuild: the preferred machine refuses our inputs (it does not
// trust our key); the build goes to the next machine in the same hook.
func TestFailoverBeforeBuild(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	bad, good := f.Machines[0], f.Machines[1]
	writeMachines(f, func(m *farm.Machine) string {
		if m == bad {
			return "(speed 100.0)"
		}
		return ""
	})
	if err := os.WriteFile(filepath.Join(bad.Store.Conf, "acl"), []byte("(acl)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := okDrv(f, "failover")
	r := offload(t, f, d, buildOpts{})
	if r.answer != "accept" || r.status != 0 {
		t.Fatalf("answer %s status %d:\n%s", r.answer, r.status, r.messages)
	}
	if !strings.Contains(r.messages, "attempt 1 of '"+d.Path+"' failed on machine '"+machineName(bad)+"'") ||
		!strings.Contains(r.messages, "attempt 2 of '"+d.Path+"': machine '"+machineName(good)+"'") {
		t.Errorf("no message about the failover:\n%s", r.messages)
	}
	if !strings.Contains(r.messages, "@ build-remote "+d.Path+" "+machineName(good)) || strings.Contains(r.messages, "@ build-remote "+d.Path+" "+machineName(bad)) {
		t.Errorf("the build did not go to the good machine only:\n%s", r.messages)
	}
	for _, out := range d.OutputPaths() {
		if _, err := os.Stat(out); err != nil {
			t.Errorf("output missing: %v", err)
		}
	}
}

// TestNoMachineLeftAfterFailure: the only machine fails before the build: transient
// failure, and the machine is in backoff for the next request.
func TestNoMachineLeftAfterFailure(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	if err := os.WriteFile(filepath.Join(f.Machines[0].Store.Conf, "acl"), []byte("(acl)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := okDrv(f, "nomore")
	r := offload(t, f, d, buildOpts{})
	if r.answer != "accept" || r.status != 1 {
		t.Fatalf("answer %s status %d:\n%s", r.answer, r.status, r.messages)
	}
	if !strings.Contains(r.messages, "127.0.0.1") {
		t.Errorf("error does not name the machine: %s", r.messages)
	}
}

// TestLocalExportFailureBlamesNoMachine: when our own guix cannot export the inputs
// (here: no signing key), the hook fails without putting the machine in backoff or
// trying the next one.
func TestLocalExportFailureBlamesNoMachine(t *testing.T) {
	f := farm.New(t, farm.Options{Machines: 2})
	writeMachines(f, nil)
	if err := os.Remove(filepath.Join(f.Local.Conf, "signing-key.sec")); err != nil {
		t.Fatal(err)
	}
	d := okDrv(f, "localfail")
	r := offload(t, f, d, buildOpts{shell: true})
	if r.answer != "accept" || r.status != 1 {
		t.Fatalf("answer %s status %d:\n%s", r.answer, r.status, r.messages)
	}
	// The local export goes through the local daemon, which signs when our key is not
	// readable, or through the local guix: either way it is this host's failure.
	if !strings.Contains(r.messages, "local guix-daemon: export: cannot read signing key") && !strings.Contains(r.messages, "local `guix archive --export`") ||
		strings.Contains(r.messages, "attempt 2") {
		t.Errorf("want a local failure and no failover:\n%s", r.messages)
	}
	// Both machines are still up: the next request is accepted, not declined as down.
	if err := os.WriteFile(filepath.Join(f.Local.Conf, "signing-key.sec"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHook(t, f, buildOpts{shell: true})
	if ans, err := h.Request(true, d.System, d.Path, nil); err != nil || ans != "accept" {
		t.Fatalf("next request: %q %v %q", ans, err, h.Messages())
	}
}

// TestBulkUploadRefusedEndsTheAttempt: a bulk upload the machine refuses (its ACL
// trusts nobody, so its `guix archive --import` fails after the stream began) ends the
// attempt with one line naming the machine, instead of waiting for the session twice.
func TestBulkUploadRefusedEndsTheAttempt(t *testing.T) {
	f := farm.New(t, farm.Options{})
	writeMachines(f, nil)
	m := f.Machines[0]
	if err := os.WriteFile(filepath.Join(m.Store.Conf, "acl"), []byte("(acl)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := addRandomItem(t, f, "bulk-refused", 3, 0, 200_000)
	d := f.MakeDrv(drv.Spec{Name: "t-bulk", Args: []string{"-c", `echo "$IN" > "$out"`},
		Env: map[string]string{"IN": in}, InputSrcs: []string{in}, Nonce: "bulk"})
	r := offload(t, f, d, buildOpts{env: []string{"OFFLOAD_ATTEMPTS=1", "OFFLOAD_BULK_THRESHOLD=1"}})
	if r.answer != "accept" || r.status != 1 {
		t.Fatalf("answer %s status %d:\n%s", r.answer, r.status, r.messages)
	}
	if !strings.Contains(r.messages, "sending 1 store item") || !strings.Contains(r.messages, "(zstd)") {
		t.Errorf("the inputs did not go by the streamed path:\n%s", r.messages)
	}
	if !strings.Contains(r.messages, "machine '"+machineName(m)+"'") {
		t.Errorf("the failure does not name the machine:\n%s", r.messages)
	}
}
