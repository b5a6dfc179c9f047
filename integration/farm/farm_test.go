package farm

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"offload/integration/drv"
	"offload/machines"
	"offload/sshexec"
	"offload/storeio"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

func TestKeysAndMachinesFile(t *testing.T) {
	f := New(t, Options{Machines: 2, ParallelBuilds: 3, NoOffload: true})
	localACL, err := storeio.LoadACL(filepath.Join(f.Local.Conf, "acl"))
	if err != nil {
		t.Fatal(err)
	}
	localKey := f.Local.Key(t).Public()
	for _, m := range f.Machines {
		if !localACL.Authorized(m.Store.Key(t).Public()) {
			t.Errorf("local ACL does not authorize machine %d", m.Port)
		}
		macl, err := storeio.LoadACL(filepath.Join(m.Store.Conf, "acl"))
		if err != nil || !macl.Authorized(localKey) || macl.Authorized(m.Store.Key(t).Public()) {
			t.Errorf("machine %d ACL: %v", m.Port, err)
		}
		if m.Store.Logical != f.Local.Logical || m.Store.Physical == f.Local.Physical {
			t.Errorf("machine %d store %+v", m.Port, m.Store)
		}
	}
	file := f.WriteMachinesFile(func(m *Machine) string {
		if m == f.Machines[1] {
			return `(speed 2.0) (features '("kvm"))`
		}
		return ""
	})
	ms, _, err := machines.Load(file)
	if err != nil || len(ms) != 2 {
		t.Fatalf("machines file: %v %d", err, len(ms))
	}
	for i, m := range ms {
		if m.Name != "127.0.0.1" || m.Port != f.Machines[i].Port || m.ParallelBuilds != 3 || m.HostKey != f.Machines[i].Server.HostKey ||
			m.PrivateKey != f.Machines[i].Server.ClientKey || len(m.Systems) != 1 || m.Systems[0] != "x86_64-linux" {
			t.Errorf("machine %d read back as %+v", i, m)
		}
	}
	if ms[1].Speed != 2.0 || len(ms[1].Features) != 1 || ms[0].Speed != 1.0 {
		t.Errorf("extra fields: %+v %+v", ms[0], ms[1])
	}
	env := strings.Join(f.HookEnv(), "\n")
	for _, want := range []string{"NIX_STORE_DIR=" + f.Local.Logical, "GUIX_CONFIGURATION_DIRECTORY=" + f.Local.Conf,
		"GUIX_STATE_DIRECTORY=" + f.State, "OFFLOAD_GUIX=" + filepath.Join(f.Bin.GuixDir, "guix")} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("HookEnv lacks %s", want)
		}
	}
}

// remote runs guix on m over real ssh, as the hook would.
func remote(t *testing.T, r *sshexec.Runner, m *Machine, stdin io.Reader, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := r.RunRemote(context.Background(), m.Target(), append([]string{"guix"}, args...), sshexec.Stdio{Stdin: stdin, Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Logf("remote guix %s: %s", strings.Join(args, " "), errb.String())
	}
	return out.String(), err
}

func local(t *testing.T, f *Farm, stdin io.Reader, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(f.Bin.GuixDir, "guix"), args...)
	cmd.Env = f.HookEnv()
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// The offload flow done by hand through a real sshd with fakeguix on both
// sides: ask what is missing, send it, build there, bring the output back.
func TestOffloadByHandOverSSH(t *testing.T) {
	f := New(t, Options{NoOffload: true})
	m := f.Machines[0]
	r := &sshexec.Runner{StateDir: filepath.Join(f.State, "offload")}
	defer r.CloseMaster(m.Target())
	tool := f.AddLocalItem("tool", map[string]string{"bin/greet*": "#!/bin/sh\necho hello from the tool\n"})
	d := f.MakeDrv(drv.Spec{Name: "t-remote", InputSrcs: []string{tool},
		Args: []string{"-c", `echo "building on the machine"; $FAKEGUIX_STORE/${TOOL##*/}/bin/greet > $out; echo "tool was $TOOL" >> $out`},
		Env:  map[string]string{"TOOL": tool}})
	inputs, err := f.Local.Drv().BuildInputs(d)
	if err != nil {
		t.Fatal(err)
	}

	missing, err := remote(t, r, m, strings.NewReader(strings.Join(inputs, " ")+"\n"), "archive", "--missing")
	if err != nil || strings.Fields(missing) == nil || len(strings.Fields(missing)) != len(inputs) {
		t.Fatalf("missing on a fresh machine: %q %v", missing, err)
	}
	exp, expErr, err := local(t, f, nil, append([]string{"archive", "--export"}, strings.Fields(missing)...)...)
	if err != nil {
		t.Fatalf("local export: %v %s", err, expErr)
	}
	if _, err := remote(t, r, m, strings.NewReader(exp), "archive", "--import"); err != nil {
		t.Fatalf("remote import: %v", err)
	}
	if again, err := remote(t, r, m, strings.NewReader(strings.Join(inputs, " ")), "archive", "--missing"); err != nil || again != "" {
		t.Fatalf("missing after import: %q %v", again, err)
	}
	out, err := remote(t, r, m, nil, "build", "--max-silent-time=30", "--no-grafts", d.Path)
	if err != nil || out != d.Outputs[0].Path+"\n" {
		t.Fatalf("remote build: %q %v", out, err)
	}
	if f.Local.Drv().Valid(d.Outputs[0].Path) {
		t.Fatal("the remote build wrote into the local store")
	}
	back, err := remote(t, r, m, nil, "archive", "--export", d.Outputs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := local(t, f, strings.NewReader(back), "archive", "--import"); err != nil {
		t.Fatalf("local import of the machine's export: %v %s", err, stderr)
	}
	realOut, _ := f.Local.Drv().Real(d.Outputs[0].Path)
	got, err := os.ReadFile(realOut)
	if err != nil || string(got) != "hello from the tool\ntool was "+tool+"\n" {
		t.Errorf("output %q %v", got, err)
	}
	info, err := f.Local.Drv().Info(d.Outputs[0].Path)
	if err != nil || len(info.References) != 1 || info.References[0] != tool {
		t.Errorf("output references %+v %v", info, err)
	}
	inv := strings.Join(m.Invocations(), "\n")
	for _, want := range []string{"guix archive --missing", "guix archive --import", "guix build --max-silent-time=30 --no-grafts " + d.Path} {
		if !strings.Contains(inv, want) {
			t.Errorf("machine invocations lack %q:\n%s", want, inv)
		}
	}

	// A machine turned hostile: its export is refused by the local side.
	m.SetHostile(t, "unsigned")
	bad, err := remote(t, r, m, nil, "archive", "--export", d.Outputs[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	other := f.Local.Drv()
	other.Physical = filepath.Join(t.TempDir(), "store")
	os.MkdirAll(other.Physical, 0o755)
	cmd := exec.Command(f.Bin.FakeGuix, "archive", "--import")
	cmd.Env = append(f.HookEnv(), "FAKEGUIX_STORE="+other.Physical, "FAKEGUIX_DB="+filepath.Join(t.TempDir(), "db"))
	cmd.Stdin = strings.NewReader(bad)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "lacks a valid signature") {
		t.Errorf("unsigned export from a hostile machine: %v %s", err, out)
	}
}

func TestCopyToMachine(t *testing.T) {
	f := New(t, Options{NoOffload: true})
	m := f.Machines[0]
	a := f.AddLocalItem("a", map[string]string{"": "a"})
	b := f.AddLocalItem("b", map[string]string{"f": "uses " + a})
	if err := f.CopyToMachine(m, b); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{a, b} {
		if !m.Store.Drv().Valid(p) {
			t.Errorf("%s not valid on the machine", p)
		}
	}
}
