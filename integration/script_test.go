package integration

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"offload/hook"
	"offload/integration/daemon"
	"offload/integration/drv"
	"offload/integration/farm"
	"offload/locking"
	"offload/sshexec/sshtest"
	"offload/statedir"
)

// update rewrites the golden output in testdata/script/*.txtar from this run:
// go test ./integration -run TestScripts -update.
var update = flag.Bool("update", false, "rewrite the golden output of testdata/script from this run")

// TestScripts runs the command line's golden scripts (testdata/script/*.txtar): the
// whole output of `offload test`, `status`, `machines` and `explain`, and the hook's
// lines, on a real farm (sshd servers), normalized (ports, paths, times, loads) and
// compared whole with cmp. Each script gets a farm of its own with three machines;
// the `machines` command makes them up, down, refusing and so on.
//
// Commands a script may use, besides testscript's own:
//
//	machines CASE...    write machines.scm, one record per CASE, on machines 1, 2, 3:
//	                    up, down (sshd stopped), refused (its ACL trusts nobody),
//	                    nohostkey, wrongkey (pinned to another machine's key), busy
//	                    (every local build slot taken), unsigned (returns unsigned
//	                    archives), fast (speed 10: chosen first);
//	                    joined with '+' (refused+fast); CASE@N puts it on machine N
//	                    (machines are not repaired: a script uses each for one
//	                    purpose); `machines broken` writes a broken file
//	offload ARGS...     run the offload binary with the farm's environment; its
//	                    normalized stdout and stderr go to the files out and err
//	hook [local|source] one request for a fresh derivation, through the real hook, as
//	                    the daemon makes it (local: the daemon could build it itself;
//	                    source: its input is a new source item);
//	                    the answer, the hook's lines and its exit status go to out
func TestScripts(t *testing.T) {
	for _, tool := range []string{"sshd", "ssh", "ssh-keygen"} {
		sshtest.NeedTool(t, tool)
	}
	testscript.Run(t, testscript.Params{
		Dir:           filepath.Join("testdata", "script"),
		UpdateScripts: *update,
		Setup: func(env *testscript.Env) error {
			tb, ok := env.T().(testing.TB)
			if !ok {
				return errors.New("testscript's T is not a testing.TB")
			}
			f := farm.New(tb, farm.Options{Machines: 3})
			env.Defer(func() {
				for _, l := range env.Values["farm"].(*scriptFarm).held {
					l.Release()
				}
			})
			okDrv(f, "setup") // a small .drv for offload test to send
			env.Values["farm"] = &scriptFarm{Farm: f}
			env.Setenv("FARM", f.Dir)
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"machines": cmdMachines,
			"offload":  cmdOffload,
			"hook":     cmdHook,
		},
	})
}

// scriptFarm is a script's farm, with the slots its busy machines hold.
type scriptFarm struct {
	*farm.Farm
	held     []*locking.Lock
	requests int // hook requests made so far, for their derivations' nonces
}

func farmOf(ts *testscript.TestScript) *scriptFarm {
	return ts.Value("farm").(*scriptFarm)
}

// cmdMachines writes the machines file for the listed cases.
func cmdMachines(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! machines")
	}
	f := farmOf(ts)
	// A new machines file: the machines of the last one are busy no more.
	for _, l := range f.held {
		l.Release()
	}
	f.held = nil
	if len(args) == 1 && args[0] == "broken" {
		ts.Check(os.WriteFile(f.MachinesFile(), []byte("(list (build-machine\n  (name \"a\")\n  (systems (list \"x86_64-linux\")\n"), 0o644))
		return
	}
	if len(args) > len(f.Machines) {
		ts.Fatalf("at most %d machines", len(f.Machines))
	}
	var b strings.Builder
	b.WriteString("(list")
	for i, arg := range args {
		if a, n, ok := strings.Cut(arg, "@"); ok {
			j, err := strconv.Atoi(n)
			if err != nil || j < 1 || j > len(f.Machines) {
				ts.Fatalf("bad machine number in %q", arg)
			}
			arg, i = a, j-1
		}
		m := f.Machines[i]
		tg := m.Target()
		hostKey := fmt.Sprintf("\n  (host-key %q)", tg.HostKey)
		extra := fmt.Sprintf("\n  (overload-threshold #f)\n  (daemon-socket %q)", m.DaemonSocket())
		for _, c := range strings.Split(arg, "+") {
			switch c {
			case "up":
			case "down":
				m.Server.Stop()
			case "refused":
				ts.Check(os.WriteFile(filepath.Join(m.Store.Conf, "acl"), []byte("(acl)\n"), 0o644))
			case "nohostkey":
				hostKey = ""
			case "wrongkey":
				hostKey = fmt.Sprintf("\n  (host-key %q)", f.Machines[(i+1)%len(f.Machines)].Server.HostKey)
			case "busy":
				// Its build slot and the place in its queue are taken.
				layout := statedir.Layout{Dir: filepath.Join(f.State, "offload")}
				id := m.Name + ":" + strconv.Itoa(m.Port)
				for _, dir := range []string{layout.Slots(id), layout.Queue(id)} {
					slot, _, err := locking.AcquireSlot(dir, 1, "building /gnu/store/00000000000000000000000000000000-busy.drv")
					ts.Check(err)
					if slot == nil {
						ts.Fatalf("machine %d: %s already taken", i+1, dir)
					}
					f.held = append(f.held, slot)
				}
			case "unsigned":
				// Its exports are unsigned: the hook refuses what it returns.
				ts.Check(os.WriteFile(filepath.Join(m.Dir, "hostile"), []byte("unsigned"), 0o644))
				ts.Check(os.WriteFile(m.DaemonHostileFile(), []byte("unsigned"), 0o644))
			case "fast":
				extra += "\n  (speed 10.0)"
			default:
				ts.Fatalf("unknown machine case %q", c)
			}
		}
		fmt.Fprintf(&b, "\n (build-machine\n  (name %q)\n  (port %d)\n  (user %q)\n  (private-key %q)%s\n  (systems (list \"x86_64-linux\"))\n  (parallel-builds 1)%s)",
			m.Name, m.Port, tg.User, tg.PrivateKey, hostKey, extra)
	}
	b.WriteString(")\n")
	ts.Check(os.WriteFile(f.MachinesFile(), []byte(b.String()), 0o644))
}

// cmdOffload runs the offload binary; normalized stdout and stderr go to out and err.
func cmdOffload(ts *testscript.TestScript, neg bool, args []string) {
	f := farmOf(ts)
	// Generous: on a loaded host each ssh login may take many seconds. A command
	// killed at this bound fails the script (its empty output must never become
	// the golden one).
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.Bin.Offload, args...)
	cmd.Env = scriptEnv(f.Farm)
	cmd.Dir = ts.Getenv("WORK")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	ts.Check(os.WriteFile(ts.MkAbs("out"), []byte(normalize(f.Farm, out.String())), 0o644))
	ts.Check(os.WriteFile(ts.MkAbs("err"), []byte(normalize(f.Farm, errOut.String())), 0o644))
	var ee *exec.ExitError
	switch {
	case err != nil && !errors.As(err, &ee), ctx.Err() != nil:
		ts.Fatalf("offload %s: %v (%v)", strings.Join(args, " "), err, ctx.Err())
	case ee != nil && ee.ExitCode() < 0:
		ts.Fatalf("offload %s: killed: %v", strings.Join(args, " "), err)
	case neg && err == nil:
		ts.Fatalf("offload %s succeeded, want a failure", strings.Join(args, " "))
	case !neg && err != nil:
		ts.Fatalf("offload %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
}

// cmdHook makes one request for a fresh derivation through the real hook, and writes
// its answer, its lines and its exit status to out.
func cmdHook(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! hook")
	}
	f := farmOf(ts)
	wantsLocal := len(args) > 0 && args[0] == "local"
	f.requests++
	d := okDrv(f.Farm, "script-"+strconv.Itoa(f.requests))
	if len(args) > 0 && args[0] == "source" {
		// A derivation whose input is a source item (a local-file), new to the machines.
		src, err := f.Local.Drv().AddSource("script-src", map[string]string{"README": "request " + strconv.Itoa(f.requests) + "\n"})
		ts.Check(err)
		d = f.MakeDrv(drv.Spec{Name: "t-src", Args: []string{"-c", `cat "$SRC/README" > "$out"`},
			Env: map[string]string{"SRC": src}, InputSrcs: []string{src}, Nonce: "script-" + strconv.Itoa(f.requests)})
	}
	env := scriptEnv(f.Farm)
	if len(args) > 0 && args[0] == "substitutes" {
		// Two inputs new to the machines, each with a substitute on the first machine,
		// one of them truncated; the machine is asked to fetch them (daemon path).
		good := f.AddLocalItem("script-sub-good", map[string]string{"data": strings.Repeat("g", 20_000)})
		bad := f.AddLocalItem("script-sub-bad", map[string]string{"data": strings.Repeat("b", 20_000)})
		d = f.MakeDrv(drv.Spec{Name: "t-subst", Args: []string{"-c", `cat "$A/data" "$B/data" > "$out"`},
			Env: map[string]string{"A": good, "B": bad}, InputSrcs: []string{good, bad}, Nonce: "script-" + strconv.Itoa(f.requests)})
		m := f.Machines[0]
		ts.Check(f.AddSubstitutes(m, good, bad))
		ts.Check(m.BreakSubstitute(bad))
		env = append(env, hook.SubstitutesEnv+"=all", hook.PathEnv+"=daemon")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	h, err := daemon.StartWith(ctx, f.HookArgv("x86_64-linux", 0, true, 0), env, daemon.Options{})
	ts.Check(err)
	defer h.Kill()
	ans, err := h.Request(wantsLocal, d.System, d.Path, d.Features())
	ts.Check(err)
	if ans == "accept" {
		ts.Check(f.SendPaths(h, d))
	} else {
		ts.Check(h.CloseStdin())
	}
	status, signaled, err := h.Wait()
	ts.Check(err)
	if signaled || ctx.Err() != nil {
		ts.Fatalf("the hook was killed (%v): its lines so far:\n%s", ctx.Err(), strings.Join(h.Messages(), "\n"))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", ans)
	for _, l := range h.Messages() {
		b.WriteString(l + "\n")
	}
	fmt.Fprintf(&b, "exit status %d\n", status)
	ts.Check(os.WriteFile(ts.MkAbs("out"), []byte(normalize(f.Farm, b.String())), 0o644))
}

// scriptEnv is the farm's environment with a connect timeout that a loaded test host
// does not reach: a machine that is up answers, whatever the load.
func scriptEnv(f *farm.Farm) []string {
	return append(f.HookEnv(), "OFFLOAD_CONNECT_TIMEOUT=60")
}

// Normalization: what changes from run to run becomes a fixed word.
var (
	reStoreHash = regexp.MustCompile(`\b[0-9a-df-np-sv-z]{32}\b`)
	reDateTime  = regexp.MustCompile(`\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?`)
	reClock     = regexp.MustCompile(`\b\d\d:\d\d:\d\d\b`)
	reSeconds   = regexp.MustCompile(`\b\d+(\.\d+)?(ms|s)\b`)
	reDecimal   = regexp.MustCompile(`\b\d+\.\d\d\b`)
	reSize      = regexp.MustCompile(`\b\d+(\.\d+)? ([KMGT]iB|B)\b`)
	reProcess   = regexp.MustCompile(`\bprocess \d+`)
	reKeyBlob   = regexp.MustCompile(`AAAA[A-Za-z0-9+/=]{20,}`)
	reSexpKey   = regexp.MustCompile(`#[0-9A-Fa-f]{32,}#`)
	// Placement's estimates and the ranking's scores follow the machine's load.
	reEstimate = regexp.MustCompile(`\b\d+\.\d s\b`)
	reScore    = regexp.MustCompile(`score \d+\.\d+`)
	reSpaces   = regexp.MustCompile(` {2,}`)
	// What the test host's shell start-up prints on the machines' stderr (pyenv's
	// rehash, when several logins contend for its lock): not offload's output.
	reHostNoise = regexp.MustCompile(`(pyenv: [^;\n]*|/root/\.pyenv/[^;\n]*)(; )?`)
	// The other temporary directories of the test (the machines' ssh keys).
	reTestTemp = regexp.MustCompile(regexp.QuoteMeta(os.TempDir()) + `/TestScripts[^/\s]*/\d+`)
)

// normalize replaces the variable parts of a command's output: the farm's paths, the
// machines' ports (PORT1, PORT2, PORT3), the user, store hashes, times, durations,
// loads, sizes, process ids, keys; status tables lose their alignment and their
// measured columns.
func normalize(f *farm.Farm, s string) string {
	s = strings.ReplaceAll(s, f.Bin.Dir, "$BIN")
	s = strings.ReplaceAll(s, f.Dir, "$FARM")
	s = reTestTemp.ReplaceAllString(s, "$$TMP")
	for i, m := range f.Machines {
		s = regexp.MustCompile(`\b`+strconv.Itoa(m.Port)+`\b`).ReplaceAllString(s, "PORT"+strconv.Itoa(i+1))
	}
	if u, err := user.Current(); err == nil {
		s = regexp.MustCompile(`\b`+regexp.QuoteMeta(u.Username)+`@`).ReplaceAllString(s, "USER@")
		s = strings.ReplaceAll(s, "~"+u.Username+"/", "~USER/")
		s = strings.ReplaceAll(s, `(user "`+u.Username+`")`, `(user "USER")`)
	}
	s = reHostNoise.ReplaceAllString(s, "")
	s = reKeyBlob.ReplaceAllString(s, "KEY")
	s = reSexpKey.ReplaceAllString(s, "#KEY#")
	s = reStoreHash.ReplaceAllString(s, "HASH")
	s = reDateTime.ReplaceAllString(s, "TIME")
	s = reClock.ReplaceAllString(s, "TIME")
	s = reSize.ReplaceAllString(s, "SIZE")
	s = reEstimate.ReplaceAllString(s, "N.N s")
	s = reScore.ReplaceAllString(s, "score N.NNN")
	s = reSeconds.ReplaceAllString(s, "Ns")
	s = reDecimal.ReplaceAllString(s, "N.NN")
	s = reProcess.ReplaceAllString(s, "process PID")
	return normalizeTable(s)
}

// normalizeTable rewrites offload status's table: the columns are joined by two
// spaces (their widths follow what was measured) and the measured ones (kernel,
// architecture, host, cores, load, free space, clock) become their names.
func normalizeTable(s string) string {
	lines := strings.Split(s, "\n")
	var cols []string
	for i, l := range lines {
		if strings.HasPrefix(l, "MACHINE ") {
			cols = reSpaces.Split(strings.TrimSpace(l), -1)
			lines[i] = strings.Join(cols, "  ")
			continue
		}
		if cols == nil || l == "" || strings.HasPrefix(l, "machine '") {
			cols = nil
			continue
		}
		f := reSpaces.Split(strings.TrimSpace(l), -1)
		if len(f) != len(cols) {
			continue
		}
		for j, c := range cols {
			switch c {
			case "KERNEL", "ARCH", "HOST", "CORES", "LOAD", "FREE", "CLOCK":
				if f[j] != "-" {
					f[j] = c
				}
			}
		}
		lines[i] = strings.Join(f, "  ")
	}
	return strings.Join(lines, "\n")
}
