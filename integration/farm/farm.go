// Package farm sets up a test build farm for the offload hook: a local
// fake store (the hook's side, where $NIX_STORE_DIR is also where the bytes
// live), N build machines each with its own real OpenSSH sshd on 127.0.0.1,
// its own physical store for the same logical store dir, its own key and
// ACL, and fakeguix as `guix` on both sides. Keys are exchanged the way an
// administrator would: the local ACL authorizes every machine's key, each
// machine's ACL authorizes the local key.
//
// It is test infrastructure (for the lead's end-to-end tests and the demo);
// it builds the test programs and the offload binary but does not run the
// hook itself (integration/daemon does).
package farm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/subst"
	"offload/machines"
	"offload/sshexec"
	"offload/sshexec/sshtest"
	"offload/storeio"
)

// Options say what farm to build.
type Options struct {
	Machines       int      // number of build machines; default 1
	ParallelBuilds int      // parallel-builds of each machine; default 1
	Systems        []string // systems of each machine; default x86_64-linux
	// NoOffload skips building the offload binary (for tests of the farm
	// itself, which must not depend on it).
	NoOffload bool
	// RefuseForwarding lists machines (by index) whose sshd refuses every forward
	// (DisableForwarding yes), for the hook's fallback when it cannot reach a
	// machine's daemon socket.
	RefuseForwarding []int
	// GuixCosts makes the stand-ins cost what Guix costs (for benchmarks): fakeguix's
	// start-up delays (FAKEGUIX_COSTS=guix, on both sides) and the daemons' handshake
	// and signing agent (WORKERD_COSTS=guix).
	GuixCosts bool
}

// Binaries are the programs a farm runs, built once per test binary.
type Binaries struct {
	Dir        string
	FakeGuix   string
	FakeDaemon string
	Offload    string // "" when Options.NoOffload
	Workerd    string // the stand-in guix-daemon (integration/cmd/workerd)
	GuixDir    string // a directory holding `guix` (= fakeguix), for PATH
	// DaemonDir holds guix-daemon (integration/cmd/guixdaemon, which only starts the
	// hook as its child) and guix (= fakeguix) beside it, as on a real installation.
	DaemonDir string
}

// Store is one side's fake store and configuration directory.
type Store struct {
	Logical, Physical, DB string
	Conf                  string // GUIX_CONFIGURATION_DIRECTORY: signing-key.sec/.pub, acl, machines.scm
}

// Drv returns the store as the drv package sees it.
func (s Store) Drv() drv.Store { return drv.Store{Logical: s.Logical, Physical: s.Physical, DB: s.DB} }

// Key returns the store's signing key.
func (s Store) Key(t testing.TB) *storeio.SecretKey {
	t.Helper()
	k, err := storeio.LoadSecretKey(filepath.Join(s.Conf, "signing-key.sec"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Machine is one build machine.
type Machine struct {
	Name    string // "127.0.0.1"
	Port    int
	Server  *sshtest.Server
	Store   Store
	GuixLog string // FAKEGUIX_LOG: one line per guix run on the machine
	Dir     string

	workerd string      // the daemon's program
	costs   bool        // Options.GuixCosts
	daemon  *daemonProc // nil when stopped
}

// Target is how sshexec reaches the machine.
func (m *Machine) Target() sshexec.Target { return m.Server.Target() }

// GuixStateDir is the GUIX_STATE_DIRECTORY of the machine's guix (its daemon's state
// directory): made without gcroots; a test that wants them there makes them.
func (m *Machine) GuixStateDir() string { return filepath.Join(m.Dir, "var-guix") }

// StateKey names the hook's state file of the machine as WriteMachinesFile describes it
// (machines.Machine.StateKey).
func (m *Machine) StateKey() string {
	tg := m.Target()
	mm := machines.Machine{Name: m.Name, Port: m.Port, User: tg.User, PrivateKey: tg.PrivateKey, HostKey: tg.HostKey}
	return mm.StateKey()
}

// SlotsDir is where the machine keeps its own build slots, shared by every hook that
// offloads to it (OFFLOAD_SLOTS_DIR in its sessions' environment).
func (m *Machine) SlotsDir() string { return filepath.Join(m.Dir, "slots") }

// Invocations returns the guix command lines run on the machine so far.
func (m *Machine) Invocations() []string { return readLines(m.GuixLog) }

// SetHostile makes the machine's `guix archive --export` (or, for the modes
// named "missing-...", `guix archive --missing`) misbehave in the given way:
// a mode and its arguments, separated by spaces (see fakeguix's hostile.go);
// "" makes it behave again.
func (m *Machine) SetHostile(t testing.TB, mode string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(m.Dir, "hostile"), []byte(mode), 0o644); err != nil {
		t.Fatal(err)
	}
}

// shellStart is the file the machine's shell sources before every remote command.
func (m *Machine) shellStart() string { return filepath.Join(m.Dir, "shell-start.sh") }

// SetShellDelay makes every remote command on m start d late (a loaded machine, slow
// to answer but alive); 0 ends it.
func (m *Machine) SetShellDelay(t testing.TB, d time.Duration) {
	t.Helper()
	text := ""
	if d > 0 {
		text = fmt.Sprintf("sleep %.1f\n", d.Seconds())
	}
	if err := os.WriteFile(m.shellStart(), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// SubstituteDir is the machine's substitute server (offload/integration/subst), named
// to its guix and its daemon by FAKEGUIX_SUBSTITUTES: one signed export bundle per
// item, named by the item's hash part.
func (m *Machine) SubstituteDir() string { return filepath.Join(m.Dir, "substitutes") }

// AddSubstitutes makes local items (not their closure) substitutable on m: each
// exported, signed with the local key (which m's ACL authorizes), into
// m.SubstituteDir().
func (f *Farm) AddSubstitutes(m *Machine, paths ...string) error {
	key, err := storeio.LoadSecretKey(filepath.Join(f.Local.Conf, "signing-key.sec"))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.SubstituteDir(), 0o755); err != nil {
		return err
	}
	local := f.Local.Drv()
	for _, p := range paths {
		info, err := local.Info(p)
		if err != nil {
			return err
		}
		real, _ := local.Real(p)
		out, err := os.Create(m.substituteFile(p))
		if err != nil {
			return err
		}
		bw := storeio.NewBundleWriter(out, key)
		err = bw.Add(real, storeio.ItemInfo{Path: p, References: info.References, Deriver: info.Deriver})
		if err == nil {
			err = bw.Close()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("farm: substitute of %s: %w", p, err)
		}
	}
	return nil
}

// BreakSubstitute truncates the substitute of p on m to half its size: it is still
// listed as available, and fails to download.
func (m *Machine) BreakSubstitute(p string) error {
	fi, err := os.Stat(m.substituteFile(p))
	if err != nil {
		return err
	}
	return os.Truncate(m.substituteFile(p), fi.Size()/2)
}

func (m *Machine) substituteFile(p string) string { return subst.Server(m.SubstituteDir()).File(p) }

// Farm is a local store and its build machines.
type Farm struct {
	Dir      string
	Local    Store
	State    string // GUIX_STATE_DIRECTORY of the hook
	LocalLog string // FAKEGUIX_LOG of the local side
	Machines []*Machine
	Bin      Binaries
	opts     Options

	localDaemon *daemonProc
}

// New builds a farm in a new temporary directory, removed when the test ends, as are
// its sshd servers and daemons.
func New(t testing.TB, opts Options) *Farm {
	t.Helper()
	if opts.Machines == 0 {
		opts.Machines = 1
	}
	if opts.ParallelBuilds == 0 {
		opts.ParallelBuilds = 1
	}
	if len(opts.Systems) == 0 {
		opts.Systems = []string{"x86_64-linux"}
	}
	dir := shortTempDir(t)
	logical := filepath.Join(dir, "gnu", "store")
	f := &Farm{Dir: dir, State: filepath.Join(dir, "state"), LocalLog: filepath.Join(dir, "local", "guix.log"), opts: opts,
		Bin: binaries(t, !opts.NoOffload)}
	f.Local = Store{Logical: logical, Physical: logical, DB: filepath.Join(dir, "local", "db"), Conf: filepath.Join(dir, "local", "conf")}
	localKey := newStore(t, f.Local)
	if err := os.MkdirAll(f.State, 0o755); err != nil {
		t.Fatal(err)
	}
	var machineKeys []*storeio.PublicKey
	for i := range opts.Machines {
		mdir := filepath.Join(dir, "m"+strconv.Itoa(i))
		m := &Machine{Name: "127.0.0.1", Dir: mdir, GuixLog: filepath.Join(mdir, "guix.log"), workerd: f.Bin.Workerd, costs: opts.GuixCosts,
			Store: Store{Logical: logical, Physical: filepath.Join(mdir, "store"), DB: filepath.Join(mdir, "db"), Conf: filepath.Join(mdir, "conf")}}
		key := newStore(t, m.Store)
		machineKeys = append(machineKeys, key.Public())
		writeACL(t, m.Store, localKey.Public())
		env := map[string]string{
			"PATH":                         f.Bin.GuixDir + ":/usr/bin:/bin",
			"NIX_STORE_DIR":                logical,
			"FAKEGUIX_STORE":               m.Store.Physical,
			"FAKEGUIX_DB":                  m.Store.DB,
			"GUIX_CONFIGURATION_DIRECTORY": m.Store.Conf,
			// The machine's daemon state directory, without gcroots (as where its user
			// may not write them): never this host's /var/guix.
			"GUIX_STATE_DIRECTORY":  filepath.Join(mdir, "var-guix"),
			"FAKEGUIX_LOG":          m.GuixLog,
			"FAKEGUIX_HOSTILE_FILE": filepath.Join(mdir, "hostile"),
			"FAKEGUIX_SUBSTITUTES":  m.SubstituteDir(),
			// A hostile archive's symlink points here, never at a real system file.
			"FAKEGUIX_HOSTILE_TARGET": filepath.Join(dir, "canary"),
			// The machine's own build slots: its machines log in as the same user
			// (whose home would otherwise hold them for every machine and test).
			"OFFLOAD_SLOTS_DIR": m.SlotsDir(),
			// Sourced by the login shell (bash) before every remote command: a drill
			// makes the machine slow to answer through it (SetShellDelay).
			"BASH_ENV": m.shellStart(),
		}
		if err := os.WriteFile(m.shellStart(), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if opts.GuixCosts {
			env["FAKEGUIX_COSTS"] = "guix"
			env["FAKEGUIX_COSTS_LOG"] = m.CostsLog()
		}
		m.Server = sshtest.Start(t, sshtest.Options{Env: env, DisableForwarding: slices.Contains(opts.RefuseForwarding, i)})
		m.Port = m.Server.Port
		f.Machines = append(f.Machines, m)
		m.StartDaemon(t)
		t.Cleanup(func() { m.StopDaemon(t) })
	}
	f.StartLocalDaemon(t)
	t.Cleanup(func() { f.StopLocalDaemon(t) })
	writeACL(t, f.Local, machineKeys...)
	if err := os.WriteFile(f.Canary(), []byte(CanaryText), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// newStore creates a store's directories and signing key.
func newStore(t testing.TB, s Store) *storeio.SecretKey {
	t.Helper()
	for _, d := range []string{s.Physical, s.DB, s.Conf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	k, err := storeio.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Conf, "signing-key.sec"), k.MarshalText(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Conf, "signing-key.pub"), k.Public().MarshalText(), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

func writeACL(t testing.TB, s Store, keys ...*storeio.PublicKey) {
	t.Helper()
	acl, err := storeio.ParseACL([]byte("(acl)"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		acl.Add(k)
	}
	if err := os.WriteFile(filepath.Join(s.Conf, "acl"), acl.MarshalText(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// CanaryText is what the farm's canary file holds until something writes through a
// hostile archive's symlink.
const CanaryText = "canary: untouched\n"

// Canary is the file hostile archives point their symlinks at.
func (f *Farm) Canary() string { return filepath.Join(f.Dir, "canary") }

// MachinesFile is where WriteMachinesFile writes: Local.Conf/machines.scm.
func (f *Farm) MachinesFile() string { return filepath.Join(f.Local.Conf, "machines.scm") }

// WriteMachinesFile writes machines.scm with one build-machine per machine
// (name, port, user, private-key, host-key, systems, parallel-builds, daemon-socket);
// extra, when not nil, returns more fields for a machine, e.g.
// `(speed 2.0)`. It returns the file name.
func (f *Farm) WriteMachinesFile(extra func(m *Machine) string) string {
	var b bytes.Buffer
	b.WriteString(";; written by offload/integration/farm\n(list")
	for _, m := range f.Machines {
		tg := m.Target()
		var systems []string
		for _, s := range f.opts.Systems {
			systems = append(systems, strconv.Quote(s))
		}
		fmt.Fprintf(&b, "\n (build-machine\n  (name %q)\n  (port %d)\n  (user %q)\n  (private-key %q)\n  (host-key %q)\n  (systems (list %s))\n  (parallel-builds %d)\n  (daemon-socket %q)",
			m.Name, m.Port, tg.User, tg.PrivateKey, tg.HostKey, strings.Join(systems, " "), f.opts.ParallelBuilds, m.DaemonSocket())
		if extra != nil {
			if x := extra(m); x != "" {
				b.WriteString("\n  " + x)
			}
		}
		b.WriteString(")")
	}
	b.WriteString(")\n")
	if err := os.WriteFile(f.MachinesFile(), b.Bytes(), 0o644); err != nil {
		panic(fmt.Sprintf("farm: write machines file: %v", err))
	}
	return f.MachinesFile()
}

// HookEnv is the environment for the hook on the local side.
func (f *Farm) HookEnv() []string {
	return append(f.costsEnv(), []string{
		"NIX_STORE_DIR=" + f.Local.Logical,
		"GUIX_CONFIGURATION_DIRECTORY=" + f.Local.Conf,
		"GUIX_STATE_DIRECTORY=" + f.State,
		"OFFLOAD_GUIX=" + filepath.Join(f.Bin.GuixDir, "guix"),
		"PATH=" + f.Bin.GuixDir + ":/usr/bin:/bin",
		"FAKEGUIX_STORE=" + f.Local.Physical,
		"FAKEGUIX_DB=" + f.Local.DB,
		"FAKEGUIX_LOG=" + f.LocalLog,
		"HOME=" + f.Dir,
		// Named explicitly: a test that moves GUIX_STATE_DIRECTORY keeps the daemon.
		"GUIX_DAEMON_SOCKET=" + f.LocalDaemonSocket(),
	}...)
}

// costsEnv is what Options.GuixCosts adds to the local side's environment.
func (f *Farm) costsEnv() []string {
	if f.opts.GuixCosts {
		return []string{"FAKEGUIX_COSTS=guix", "FAKEGUIX_COSTS_LOG=" + f.LocalCostsLog()}
	}
	return nil
}

// LocalCostsLog is where the local guix reports its start-up delays under
// Options.GuixCosts: one "SUB-COMMAND DELAY" line per run.
func (f *Farm) LocalCostsLog() string { return filepath.Join(f.Dir, "local", "guix-costs.log") }

// CostsLog is where the machine's guix reports its start-up delays under
// Options.GuixCosts: one "SUB-COMMAND DELAY" line per run.
func (m *Machine) CostsLog() string { return filepath.Join(m.Dir, "guix-costs.log") }

// GuixSystemEnv is the hook's environment as Guix System's guix-daemon service gives
// it (../shared/spec/DEPLOYMENT.md): PATH holds only the directories of tar and gzip,
// GUIX_LOCPATH and LC_ALL are set, there is no HOME, USER, OFFLOAD_GUIX or OFFLOAD_SSH.
// The rest is the farm's own plumbing: where its store, configuration and state live,
// and the stand-in's settings.
func (f *Farm) GuixSystemEnv() []string {
	tools := filepath.Join(f.Dir, "tar-gzip-bin")
	if _, err := os.Stat(tools); err != nil {
		os.MkdirAll(tools, 0o755)
		for _, p := range []string{"tar", "gzip"} {
			if real, err := exec.LookPath(p); err == nil {
				os.Symlink(real, filepath.Join(tools, p))
			}
		}
	}
	return append(f.costsEnv(), []string{
		"PATH=" + tools,
		"GUIX_LOCPATH=/run/current-system/locale",
		"LC_ALL=en_US.utf8",
		"NIX_STORE_DIR=" + f.Local.Logical,
		"GUIX_CONFIGURATION_DIRECTORY=" + f.Local.Conf,
		"GUIX_STATE_DIRECTORY=" + f.State,
		"FAKEGUIX_STORE=" + f.Local.Physical,
		"FAKEGUIX_DB=" + f.Local.DB,
		"FAKEGUIX_LOG=" + f.LocalLog,
		"GUIX_DAEMON_SOCKET=" + f.LocalDaemonSocket(),
	}...)
}

// DaemonHookArgv is HookArgv started through the guix-daemon stand-in of
// Bin.DaemonDir, so that the hook's parent is a guix-daemon with guix beside it.
func (f *Farm) DaemonHookArgv(system string, maxSilent int, trace bool, timeout int) []string {
	return append([]string{filepath.Join(f.Bin.DaemonDir, "guix-daemon")}, f.HookArgv(system, maxSilent, trace, timeout)...)
}

// HookArgv is how guix-daemon starts the hook: OFFLOAD offload SYSTEM
// MAX-SILENT-TIME PRINT-BUILD-TRACE BUILD-TIMEOUT.
func (f *Farm) HookArgv(system string, maxSilent int, trace bool, timeout int) []string {
	tr := "0"
	if trace {
		tr = "1"
	}
	return []string{f.Bin.Offload, "offload", system, strconv.Itoa(maxSilent), tr, strconv.Itoa(timeout)}
}

// StartHook starts the offload binary as guix-daemon would, with
// HookArgv(system, maxSilent, true, timeout) and HookEnv.
func (f *Farm) StartHook(ctx context.Context, system string, maxSilent, timeout int, opts daemon.Options) (*daemon.Hook, error) {
	if f.Bin.Offload == "" {
		return nil, fmt.Errorf("farm: the offload binary was not built (Options.NoOffload)")
	}
	return daemon.StartWith(ctx, f.HookArgv(system, maxSilent, true, timeout), f.HookEnv(), opts)
}

// Request asks the hook h about d as the daemon does (wantsLocal false).
func (f *Farm) Request(h *daemon.Hook, d *drv.Derivation) (string, error) {
	return h.Request(false, d.System, d.Path, d.Features())
}

// SendPaths sends the inputs and missing outputs of d from the local store,
// computed as the daemon does.
func (f *Farm) SendPaths(h *daemon.Hook, d *drv.Derivation) error {
	inputs, err := f.Local.Drv().BuildInputs(d)
	if err != nil {
		return err
	}
	return h.SendPaths(inputs, f.Local.Drv().MissingOutputs(d))
}

// AddLocalItem creates a valid item in the local store (see drv.Store.AddItem
// for files) and returns its path.
func (f *Farm) AddLocalItem(name string, files map[string]string) string {
	p, err := f.Local.Drv().AddItem(name, files)
	if err != nil {
		panic(fmt.Sprintf("farm: add local item %s: %v", name, err))
	}
	return p
}

// MakeDrv writes a derivation into the local store. The builder defaults to
// /bin/sh and PATH to /usr/bin:/bin (real Guix sets /path-not-set).
func (f *Farm) MakeDrv(spec drv.Spec) *drv.Derivation {
	if spec.Builder == "" {
		spec.Builder = "/bin/sh"
	}
	env := map[string]string{"PATH": "/usr/bin:/bin"}
	for k, v := range spec.Env {
		env[k] = v
	}
	spec.Env = env
	d, err := f.Local.Drv().Make(spec)
	if err != nil {
		panic(fmt.Sprintf("farm: make derivation %s: %v", spec.Name, err))
	}
	return d
}

// CopyToMachine makes local items valid on m too (as if sent earlier), so
// that a test can start with inputs already present there.
func (f *Farm) CopyToMachine(m *Machine, paths ...string) error {
	local, remote := f.Local.Drv(), m.Store.Drv()
	closure, err := local.Closure(paths)
	if err != nil {
		return err
	}
	for _, p := range closure {
		if remote.Valid(p) {
			continue
		}
		info, err := local.Info(p)
		if err != nil {
			return err
		}
		src, _ := local.Real(p)
		dst, _ := remote.Real(p)
		if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s to %s: %v: %s", p, m.Store.Physical, err, out)
		}
		if err := remote.Register(*info); err != nil {
			return err
		}
	}
	return nil
}

// LocalInvocations returns the guix command lines run on the local side.
func (f *Farm) LocalInvocations() []string { return readLines(f.LocalLog) }

func readLines(file string) []string {
	b, err := os.ReadFile(file)
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

var (
	binOnce    sync.Once
	binDir     string
	binErr     error
	offOnce    sync.Once
	offloadErr error
)

// binaries builds fakeguix, fakedaemon and workerd (and offload if asked) once per
// test binary, into a temporary directory that Cleanup removes.
func binaries(t testing.TB, offload bool) Binaries {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "offload-farm-bin-")
		if binErr != nil {
			return
		}
		if binErr = goBuild(filepath.Join(binDir, "fakeguix"), "offload/integration/cmd/fakeguix"); binErr != nil {
			return
		}
		if binErr = goBuild(filepath.Join(binDir, "fakedaemon"), "offload/integration/cmd/fakedaemon"); binErr != nil {
			return
		}
		if binErr = goBuild(filepath.Join(binDir, "workerd"), "offload/integration/cmd/workerd"); binErr != nil {
			return
		}
		if binErr = os.MkdirAll(filepath.Join(binDir, "guixbin"), 0o755); binErr == nil {
			binErr = os.Symlink("../fakeguix", filepath.Join(binDir, "guixbin", "guix"))
		}
		if binErr != nil {
			return
		}
		// The daemon's directory: guix-daemon (the hook's parent) with guix beside it.
		if binErr = goBuild(filepath.Join(binDir, "daemonbin", "guix-daemon"), "offload/integration/cmd/guixdaemon"); binErr == nil {
			binErr = os.Symlink("../fakeguix", filepath.Join(binDir, "daemonbin", "guix"))
		}
		if binErr == nil {
			// Unprivileged hooks run these too.
			binErr = os.Chmod(binDir, 0o755)
		}
	})
	if binErr != nil {
		t.Fatalf("farm: build test programs: %v", binErr)
	}
	b := Binaries{Dir: binDir, FakeGuix: filepath.Join(binDir, "fakeguix"), FakeDaemon: filepath.Join(binDir, "fakedaemon"),
		Workerd: filepath.Join(binDir, "workerd"),
		GuixDir: filepath.Join(binDir, "guixbin"), DaemonDir: filepath.Join(binDir, "daemonbin")}
	if offload {
		offOnce.Do(func() { offloadErr = goBuild(filepath.Join(binDir, "offload"), "offload") })
		if offloadErr != nil {
			t.Fatalf("farm: build offload: %v", offloadErr)
		}
		b.Offload = filepath.Join(binDir, "offload")
	}
	return b
}

func goBuild(out, pkg string) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside the offload module")
	}
	return filepath.Dir(gomod), nil
}

// Cleanup removes the built programs; call it from TestMain after m.Run.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}
