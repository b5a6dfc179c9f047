package diagnose

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"offload/hook"

	"offload/locking"
	"offload/machines"
	"offload/sshexec"
	"offload/statedir"
	"offload/storeio"
)

// CheckStatus is the outcome of one check.
type CheckStatus int

const (
	CheckOK CheckStatus = iota
	CheckFailed
	CheckSkipped // an earlier check failed, so this one could not run
)

// Names of the checks `offload test` runs, in order.
const (
	CheckSSH    = "ssh"    // connects, with the pinned host key
	CheckGuix   = "guix"   // `guix --version` runs there
	CheckDaemon = "daemon" // its guix-daemon answers a query
	// CheckCompression says which compressor the transfers will use (never fails:
	// without zstd or gzip they still work, through ssh's compression, only slower).
	CheckCompression = "compression"
	// CheckPath says which path the hook's offloads take to the machine (never fails: the
	// shell path works, only slower), and how to get the daemon path.
	CheckPath   = "path"
	CheckImport = "import" // it accepts an archive signed by our key
	CheckExport = "export" // we accept its archives
	CheckSlots  = "slots"  // the hook's slot and lock files for it are usable here
)

// Check is the outcome of one check on one machine.
type Check struct {
	Machine string // NAME:PORT (machines.Machine.Display)
	Name    string // one of the Check* names
	Status  CheckStatus
	Detail  string // ok: what was seen; failed: why; skipped: why not run
	Fix     string // failed: what to do, one sentence
}

// String returns the check's line: "machine 'NAME:PORT': CHECK: ok (DETAIL)",
// "machine 'NAME:PORT': CHECK: FAILED: WHY; fix: FIX" or "...: CHECK: skipped: WHY".
// This is where `offload test` names the machine, once: the details say only what
// went wrong.
func (c Check) String() string {
	prefix := "machine '" + c.Machine + "': " + c.Name + ": "
	switch c.Status {
	case CheckOK:
		if c.Detail == "" {
			return prefix + "ok"
		}
		return prefix + "ok (" + oneLine(c.Detail) + ")"
	case CheckSkipped:
		return prefix + "skipped: " + oneLine(c.Detail)
	}
	s := prefix + "FAILED: " + oneLine(c.Detail)
	if c.Fix != "" {
		s += "; fix: " + c.Fix
	}
	return s
}

// oneLine joins the lines of s (e.g. a remote stderr tail) with " / ".
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " / ")
}

// Checker runs `offload test`: every check of BEHAVIOUR's build machine against
// each machine, from this host, as the hook would do it.
type Checker struct {
	Conf   hook.Config // ConfDir (acl, signing-key.pub), StateDir, StoreDir, Guix (local)
	Runner *sshexec.Runner
	// Item is the local store item sent to the machines; "" picks a small one
	// (a .drv when there is one).
	Item string
	// Timeout bounds each remote check; 0 means 2 minutes.
	Timeout time.Duration

	once   sync.Once
	sample sample
}

// sample is the local archive sent to every machine, exported once.
type sample struct {
	path   string
	bundle []byte
	err    error
}

// maxSample bounds the archive sent to each machine.
const maxSample = 16 << 20

// Run checks each machine of ms once (by name and port), in parallel, writes each
// machine's lines to w in the order of ms as soon as it and those before it are done,
// and returns the number of failed checks.
func (c *Checker) Run(ctx context.Context, ms []*machines.Machine, w io.Writer) (failed int, err error) {
	todo := machines.Unique(ms)
	results := make([]chan []Check, len(todo))
	for i, m := range todo {
		results[i] = make(chan []Check, 1)
		go func() { results[i] <- c.CheckMachine(ctx, m) }()
	}
	for _, ch := range results {
		for _, r := range <-ch {
			if r.Status == CheckFailed {
				failed++
			}
			if _, werr := fmt.Fprintln(w, r); werr != nil && err == nil {
				err = werr
			}
		}
	}
	return failed, err
}

// CheckMachine runs the checks on m in order. A check that needs the machine is
// skipped when one it depends on failed; the local slots check always runs.
func (c *Checker) CheckMachine(ctx context.Context, m *machines.Machine) []Check {
	name := m.Display()
	var out []Check
	add := func(check string, st CheckStatus, detail, fix string) {
		out = append(out, Check{Machine: name, Name: check, Status: st, Detail: detail, Fix: fix})
	}
	skipRest := func(why string, checks ...string) {
		for _, ch := range checks {
			add(ch, CheckSkipped, why, "")
		}
	}

	t := c.target(m)
	if err := c.remote(ctx, t, []string{"true"}, nil, nil); err != nil {
		add(CheckSSH, CheckFailed, err.Error(), sshFix(m, err))
		skipRest("cannot connect", CheckGuix, CheckDaemon, CheckCompression, CheckPath, CheckImport, CheckExport)
		out = append(out, c.checkSlots(m))
		return out
	}
	add(CheckSSH, CheckOK, fmt.Sprintf("%s@%s port %d, host key as pinned", m.User, m.Name, m.Port), "")
	// The machine answers: whatever backoff it earned ends now (the user just fixed it,
	// perhaps), and the next request may use it.
	if err := (machines.State{Dir: c.Conf.StateDir}).RecordSuccess(m.StateKey(), nil, time.Now()); err != nil {
		add(CheckSlots, CheckFailed, err.Error(), fmt.Sprintf("make %s writable by this user", c.Conf.StateDir))
	}

	var version bytes.Buffer
	if err := c.remote(ctx, t, []string{"guix", "--version"}, nil, &version); err != nil {
		add(CheckGuix, CheckFailed, "`guix --version` failed there: "+err.Error(),
			fmt.Sprintf("install Guix on %s, or make `guix` found on the PATH that ssh gives %s (non-interactive shells)", m.Name, m.User))
		skipRest("guix does not run there", CheckDaemon, CheckCompression, CheckPath, CheckImport, CheckExport)
		out = append(out, c.checkSlots(m))
		return out
	}
	v, _, _ := strings.Cut(strings.TrimSpace(version.String()), "\n")
	add(CheckGuix, CheckOK, v, "")

	smp := c.localSample(ctx)
	probe := smp.path
	if probe == "" {
		// No local item to send: ask about a path that cannot exist.
		probe = c.Conf.StoreDir + "/00000000000000000000000000000000-offload-test"
	}
	// The same question the hook asks before sending: which items it lacks, and
	// which compressors it has.
	answer, has, raw, err := c.askMissing(ctx, t, probe)
	switch {
	case err != nil:
		add(CheckDaemon, CheckFailed, "`guix archive --missing` failed there: "+err.Error(),
			fmt.Sprintf("start guix-daemon on %s and check that %s can use its socket %s", m.Name, m.User, m.DaemonSocket))
		skipRest("its daemon does not answer", CheckCompression, CheckPath, CheckImport, CheckExport)
		out = append(out, c.checkSlots(m))
		return out
	case len(answer) > 1 || len(answer) == 1 && answer[0] != probe:
		add(CheckDaemon, CheckFailed, fmt.Sprintf("`guix archive --missing` answered %q, asked about %s only", raw, probe),
			fmt.Sprintf("check the guix and guix-daemon installed on %s", m.Name))
		skipRest("its daemon answers wrongly", CheckCompression, CheckPath, CheckImport, CheckExport)
		out = append(out, c.checkSlots(m))
		return out
	}
	add(CheckDaemon, CheckOK, "it answered `guix archive --missing`", "")
	add(CheckCompression, CheckOK, compressionDetail(m, has), "")
	add(CheckPath, CheckOK, c.pathDetail(ctx, m, t), "")
	hadItem := len(answer) == 0 && smp.path != ""

	imported := false
	if smp.err != nil {
		add(CheckImport, CheckFailed, smp.err.Error(),
			"check that `guix archive --export` works here (it needs the signing key: `guix archive --generate-key`), or name an item with --item")
	} else if err := c.remote(ctx, t, []string{"guix", "archive", "--import"}, bytes.NewReader(smp.bundle), nil); err != nil {
		add(CheckImport, CheckFailed, fmt.Sprintf("it refused %s signed by our key: %v", smp.path, err),
			fmt.Sprintf("run `guix archive --authorize < %s` on %s", filepath.Join(c.Conf.ConfDir, "signing-key.pub"), m.Name))
	} else {
		imported = true
		add(CheckImport, CheckOK, fmt.Sprintf("it accepted %s signed by our key", smp.path), "")
	}

	if imported || hadItem {
		out = append(out, c.checkExport(ctx, m, smp.path))
	} else {
		add(CheckExport, CheckSkipped, "no store item known to be on the machine to export", "")
	}
	out = append(out, c.checkSlots(m))
	return out
}

// pathDetail tries the daemon path to m as the hook would (hook.DialMachineDaemon),
// remembers what it found for the hook (so that a machine just fixed gets the fast path
// at once), and says which path the offloads take, with the fix for the slow one.
func (c *Checker) pathDetail(ctx context.Context, m *machines.Machine, t sshexec.Target) string {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	socket := m.DaemonSocket
	if socket == "" {
		socket = sshexec.DefaultDaemonSocket
	}
	// As the hook does it: through a shared connection, which `offload test` itself
	// does not keep (it leaves no master behind).
	r := *c.Runner
	r.ControlPersist = 0
	defer r.CloseMaster(t)
	conn, why, err := hook.DialMachineDaemon(ctx, &r, t, socket)
	rec := hook.PathRecord{Checked: time.Now()}
	switch {
	case conn != nil:
		v := conn.DaemonVersion()
		conn.Close()
		rec.Path = "daemon"
		hook.RememberPath(c.Conf.StateDir, m, rec)
		return fmt.Sprintf("the daemon path: its guix-daemon (protocol %d.%d) through ssh's socket forwarding", v>>8, v&0xff)
	case err != nil:
		return "the shell path (slower) for now: reaching its daemon failed: " + err.Error()
	}
	rec.Path, rec.Why = "shell", why
	hook.RememberPath(c.Conf.StateDir, m, rec)
	return "the shell path (slower): " + why
}

// compressionDetail says how transfers to m will be compressed (OFFLOAD_COMPRESSION=auto).
func compressionDetail(m *machines.Machine, has map[string]bool) string {
	switch c, _ := hook.ChooseCompression(hook.CompressionAuto, has); c {
	case hook.CompressZstd:
		return "transfers use zstd"
	case hook.CompressGzip:
		return fmt.Sprintf("transfers use gzip, slower than zstd: install zstd on %s", m.Name)
	default:
		return fmt.Sprintf("neither zstd nor gzip found: transfers are uncompressed, slow on a slow link; install zstd on %s", m.Name)
	}
}

// checkExport has the machine export item and checks its signature against our ACL,
// importing nothing.
func (c *Checker) checkExport(ctx context.Context, m *machines.Machine, item string) Check {
	ck := Check{Machine: m.Display(), Name: CheckExport}
	fail := func(detail, fix string) Check {
		ck.Status, ck.Detail, ck.Fix = CheckFailed, detail, fix
		return ck
	}
	aclFile := filepath.Join(c.Conf.ConfDir, "acl")
	trustFix := fmt.Sprintf("run `guix archive --authorize < KEY` here, KEY being %s's /etc/guix/signing-key.pub", m.Name)
	acl, err := storeio.LoadACL(aclFile)
	if err != nil {
		return fail(err.Error(), fmt.Sprintf("repair %s (`guix archive --authorize` writes it)", aclFile))
	}
	var bundle bytes.Buffer
	if err := c.remote(ctx, c.target(m), []string{"guix", "archive", "--export", item}, nil, &limitWriter{w: &bundle, n: maxSample}); err != nil {
		return fail(fmt.Sprintf("`guix archive --export %s` failed there: %v", item, err),
			fmt.Sprintf("check that guix on %s has a signing key (`guix archive --generate-key`)", m.Name))
	}
	br := storeio.NewBundleReader(&bundle)
	n := 0
	for {
		info, err := br.Next("")
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(fmt.Sprintf("its archive of %s is damaged: %v", item, err), fmt.Sprintf("check the guix installed on %s", m.Name))
		}
		n++
		if info.Path != item {
			return fail(fmt.Sprintf("its archive holds %s, asked for %s", info.Path, item), fmt.Sprintf("check the guix installed on %s", m.Name))
		}
		if _, err := storeio.VerifySignature(info.Signature, info.Hash, acl); err != nil {
			if errors.Is(err, storeio.ErrUnauthorizedKey) || errors.Is(err, storeio.ErrNoSignature) {
				return fail(fmt.Sprintf("we would refuse its archive of %s: %v (checked against %s)", item, err, aclFile), trustFix)
			}
			return fail(fmt.Sprintf("we would refuse its archive of %s: %v", item, err), fmt.Sprintf("check the guix installed on %s and its signing key", m.Name))
		}
	}
	if n == 0 {
		return fail(fmt.Sprintf("its archive of %s is empty", item), fmt.Sprintf("check the guix installed on %s", m.Name))
	}
	ck.Detail = fmt.Sprintf("its archive of %s is signed by a key in %s", item, aclFile)
	return ck
}

// checkSlots makes sure the hook can create and lock the machine's slot files and
// transfer locks. Slots in use are fine; only errors fail.
func (c *Checker) checkSlots(m *machines.Machine) Check {
	ck := Check{Machine: m.Display(), Name: CheckSlots}
	dir := filepath.Join(c.Conf.StateDir, m.ID())
	fix := fmt.Sprintf("make %s a directory that the user running guix-daemon (usually root) can write", c.Conf.StateDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		ck.Status, ck.Detail, ck.Fix = CheckFailed, fmt.Sprintf("cannot create the slot directory: %v", err), fix
		return ck
	}
	n := max(m.ParallelBuilds, 1)
	slot, i, err := locking.AcquireSlot(dir, n, "checked by offload test")
	if err != nil {
		ck.Status, ck.Detail, ck.Fix = CheckFailed, fmt.Sprintf("cannot lock a build slot: %v", err), fix
		return ck
	}
	inUse := "a slot is free"
	if slot == nil {
		inUse = "all in use"
	} else {
		slot.Release()
		_ = i
	}
	for _, kind := range []string{"upload", "download"} {
		l, _, err := locking.TryAcquire(statedir.Layout{Dir: c.Conf.StateDir}.TransferLock(m.ID(), kind), "checked by offload test")
		if err != nil {
			ck.Status, ck.Detail, ck.Fix = CheckFailed, fmt.Sprintf("cannot lock the %s lock: %v", kind, err), fix
			return ck
		}
		if l != nil {
			l.Release()
		}
	}
	ck.Detail = fmt.Sprintf("%d slot%s under %s (%s), transfer locks usable", n, plural(n), dir, inUse)
	return ck
}

// target is how the checks reach m: as the hook does (hook.SSHTarget).
func (c *Checker) target(m *machines.Machine) sshexec.Target { return hook.SSHTarget(c.Conf, m) }

// remote runs a command on t with the check's deadline.
func (c *Checker) remote(ctx context.Context, t sshexec.Target, argv []string, stdin io.Reader, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	return c.timedOut(ctx, c.Runner.RunRemote(ctx, t, argv, sshexec.Stdio{Stdin: stdin, Stdout: stdout}))
}

// askMissing asks the hook's question before sending (hook.AskMissing) within the
// check's time limit.
func (c *Checker) askMissing(ctx context.Context, t sshexec.Target, path string) (missing []string, has map[string]bool, raw string, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	missing, has, raw, err = hook.AskMissing(ctx, c.Runner, t, []string{path})
	return missing, has, raw, c.timedOut(ctx, err)
}

func (c *Checker) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 2 * time.Minute
	}
	return c.Timeout
}

// timedOut says so when err came from the check's time limit.
func (c *Checker) timedOut(ctx context.Context, err error) error {
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s", c.timeout()) // err is the killed ssh's command line
	}
	return err
}

// sshFix says what to do about a failed connection, when the error does not say it
// already: a missing or mismatched host-key and a missing private key carry their fix
// in their own message (the hook prints them too), and a fix is said once.
func sshFix(m *machines.Machine, err error) string {
	var nh *sshexec.NoHostKeyError
	var ue *sshexec.UnreachableError
	switch {
	case errors.As(err, &nh), errors.As(err, &ue) && ue.HostKeyMismatch, errors.Is(err, fs.ErrNotExist):
		return ""
	case errors.As(err, &ue) && strings.Contains(ue.StderrTail, "Permission denied"):
		return fmt.Sprintf("add %s.pub to ~%s/.ssh/authorized_keys on %s", m.PrivateKey, m.User, m.Name)
	case errors.As(err, &ue):
		return fmt.Sprintf("check that %s is up and that sshd listens on port %d", m.Name, m.Port)
	}
	return "check the machine's record in machines.scm"
}

// localSample exports, once, a small local store item to send to the machines.
func (c *Checker) localSample(ctx context.Context) sample {
	c.once.Do(func() {
		cands := []string{c.Item}
		if c.Item == "" {
			cands = smallItems(c.Conf.StoreDir, 5)
			if len(cands) == 0 {
				c.sample.err = fmt.Errorf("found no small item in %s to send", c.Conf.StoreDir)
				return
			}
		}
		for _, p := range cands {
			var b bytes.Buffer
			err := c.Runner.Run(ctx, []string{c.Conf.Guix, "archive", "--export", p}, sshexec.Stdio{Stdout: &limitWriter{w: &b, n: maxSample}})
			if err == nil {
				c.sample = sample{path: p, bundle: b.Bytes()}
				return
			}
			c.sample.err = fmt.Errorf("local `guix archive --export %s`: %w", p, err)
		}
	})
	return c.sample
}

// smallItems returns up to n store items that are cheap to send: .drv files of at
// most 64 KiB among the first few thousand entries of the store, else any regular
// file that small. Reading stops early: a store may hold a million entries.
func smallItems(storeDir string, n int) []string {
	d, err := os.Open(storeDir)
	if err != nil {
		return nil
	}
	defer d.Close()
	var drvs, others []string
	for scanned := 0; scanned < 4096 && len(drvs) < n; {
		es, err := d.ReadDir(256)
		for _, e := range es {
			scanned++
			name := e.Name()
			p := storeDir + "/" + name
			if !e.Type().IsRegular() || strings.HasSuffix(name, ".lock") || storeio.ValidateStorePath(storeDir, p) != nil {
				continue
			}
			info, err := e.Info()
			if err != nil || info.Size() > 64<<10 {
				continue
			}
			if strings.HasSuffix(name, ".drv") {
				drvs = append(drvs, p)
			} else {
				others = append(others, p)
			}
		}
		if err != nil {
			break
		}
	}
	out := append(drvs, others...)
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// limitWriter fails once more than n bytes were written.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, fmt.Errorf("more than %d bytes of output", maxSample)
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
