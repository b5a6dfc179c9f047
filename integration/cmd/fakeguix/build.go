package main

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"offload/integration/drv"
)

// buildOptions are the `guix build` options the offload flow uses.
type buildOptions struct {
	maxSilent  int // seconds, 0 = none
	timeout    int // seconds, 0 = none
	verbosity  int
	drvOnly    bool // -d
	keepFailed bool // -K
	roots      []string
	dryRun     bool // -n
	keepGoing  bool // -k
}

// errBuildFailed marks a failed (or timed out) build; the top level turns it
// into "build of `DRV' failed", as the daemon's error reads.
var errBuildFailed = errors.New("build failed")

// build implements `guix build DRV...` (guix/scripts/build.scm) with the
// daemon's side done here: the builder runs for real.
//
// What is printed follows guix/status.scm at each --verbosity (default 3,
// as `guix build`): level 0 nothing; level 1 "building DRV...", the daemon's
// own lines ("builder for ... failed with exit code N", "... timed out after
// N seconds") and "build of DRV failed"; level 2 and up also the builder's
// output and "successfully built DRV". Real `guix build` never shows the
// daemon's raw "@ build-started" trace lines: its status reporter consumes
// them. Failures and timeouts both exit 1 ("guix build: error: build of
// `DRV' failed"), as real `guix build` does; only the messages tell a
// timeout apart.
func (e *env) build(ctx context.Context, args []string) error {
	opt := buildOptions{verbosity: 3}
	o := &options{args: args}
	var drvPaths []string
	for {
		name, isOpt, ok := o.next()
		if !ok {
			break
		}
		if !isOpt {
			drvPaths = append(drvPaths, name)
			continue
		}
		var err error
		var v string
		switch optName(name) {
		case "max-silent-time":
			_, v, err = o.value(name)
			if err == nil {
				opt.maxSilent, err = seconds(v)
			}
		case "timeout":
			_, v, err = o.value(name)
			if err == nil {
				opt.timeout, err = seconds(v)
			}
		case "v", "verbosity":
			_, v, err = o.value(name)
			if err == nil {
				opt.verbosity, err = seconds(v)
			}
		case "q", "quiet":
			opt.verbosity = 0
		case "r", "root":
			_, v, err = o.value(name)
			opt.roots = append(opt.roots, v)
		case "c", "cores", "M", "max-jobs":
			_, _, err = o.value(name)
		case "d", "derivations":
			opt.drvOnly = true
		case "K", "keep-failed":
			opt.keepFailed = true
		case "n", "dry-run":
			opt.dryRun = true
		case "k", "keep-going":
			opt.keepGoing = true
		case "no-grafts", "no-substitutes", "no-offload", "fallback":
		default:
			return fail("%s: unrecognized option", "--"+optName(name))
		}
		if err != nil {
			return err
		}
	}
	// Plain store items are substituted (substitute.go), derivations built.
	var items []string
	drvPaths = slices.DeleteFunc(drvPaths, func(p string) bool {
		item := !strings.HasSuffix(p, ".drv") && e.store.CheckPath(p) == nil
		if item {
			items = append(items, p)
		}
		return item
	})
	if len(items) > 0 {
		if err := e.buildItems(items, opt); err != nil || len(drvPaths) == 0 {
			return err
		}
	}
	if len(drvPaths) == 0 {
		return fail("no arguments specified, nothing to do")
	}
	var drvs []*drv.Derivation
	for _, p := range drvPaths {
		if !strings.HasSuffix(p, ".drv") || e.store.CheckPath(p) != nil {
			return fail("%s: unknown package", p)
		}
		if !e.store.Valid(p) {
			return fail("path `%s' is not valid", p)
		}
		d, err := e.store.Read(p)
		if err != nil {
			return fail("%v", err)
		}
		drvs = append(drvs, d)
	}
	if opt.drvOnly {
		for _, d := range drvs {
			fmt.Fprintln(e.stdout, d.Path)
		}
		return e.registerRoots(drvs, opt.roots, func(d *drv.Derivation) []string { return []string{d.Path} })
	}
	var todo []string
	for _, d := range drvs {
		if err := e.toBuild(d, &todo, map[string]bool{}); err != nil {
			return err
		}
	}
	if opt.dryRun {
		if len(todo) > 0 && opt.verbosity >= 1 {
			fmt.Fprintf(e.stderr, "The following derivation%s would be built:\n", map[bool]string{true: "", false: "s"}[len(todo) == 1])
			for _, p := range todo {
				fmt.Fprintf(e.stderr, "  %s\n", p)
			}
		}
		return nil
	}
	if len(todo) > 0 && opt.verbosity >= 1 {
		if len(todo) == 1 {
			fmt.Fprintln(e.stderr, "The following derivation will be built:")
		} else {
			fmt.Fprintln(e.stderr, "The following derivations will be built:")
		}
		for _, p := range todo {
			fmt.Fprintf(e.stderr, "   %s\n", p)
		}
	}
	for _, d := range drvs {
		if err := e.realise(ctx, d, opt); err != nil {
			if errors.Is(err, errBuildFailed) {
				return fail("build of `%s' failed", d.Path)
			}
			return err
		}
	}
	for _, d := range drvs {
		for _, p := range d.OutputPaths() {
			fmt.Fprintln(e.stdout, p)
		}
	}
	return e.registerRoots(drvs, opt.roots, (*drv.Derivation).OutputPaths)
}

func seconds(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fail("%s: invalid number", v)
	}
	return n, nil
}

func (e *env) allValid(paths []string) bool {
	for _, p := range paths {
		if !e.store.Valid(p) {
			return false
		}
	}
	return true
}

// neededOutputs returns the paths of the outputs of in.Path that d needs.
func (e *env) neededOutputs(in drv.InputDrv) (*drv.Derivation, []string, error) {
	dep, err := e.store.Read(in.Path)
	if err != nil {
		return nil, nil, fail("%v", err)
	}
	var paths []string
	for _, name := range in.Outputs {
		o, ok := dep.Output(name)
		if !ok {
			return nil, nil, fail("reference to invalid output '%s' of derivation '%s'", name, in.Path)
		}
		paths = append(paths, o.Path)
	}
	return dep, paths, nil
}

// toBuild appends to todo the derivations that realising d would build,
// dependencies first.
func (e *env) toBuild(d *drv.Derivation, todo *[]string, seen map[string]bool) error {
	if seen[d.Path] || e.allValid(d.OutputPaths()) {
		return nil
	}
	seen[d.Path] = true
	for _, in := range d.InputDrvs {
		dep, paths, err := e.neededOutputs(in)
		if err != nil {
			return err
		}
		if !e.allValid(paths) {
			if err := e.toBuild(dep, todo, seen); err != nil {
				return err
			}
		}
	}
	*todo = append(*todo, d.Path)
	return nil
}

// realise makes the outputs of d valid, building its missing input
// derivations first.
func (e *env) realise(ctx context.Context, d *drv.Derivation, opt buildOptions) error {
	if e.allValid(d.OutputPaths()) {
		return nil
	}
	var inputs []string // the input closure roots: needed outputs and sources
	for _, in := range d.InputDrvs {
		dep, paths, err := e.neededOutputs(in)
		if err != nil {
			return err
		}
		if !e.allValid(paths) {
			if err := e.realise(ctx, dep, opt); err != nil {
				return err
			}
		}
		inputs = append(inputs, paths...)
	}
	for _, src := range d.InputSrcs {
		if !e.store.Valid(src) {
			return fail("path `%s' is not valid", src)
		}
	}
	inputs = append(inputs, d.InputSrcs...)
	closure, err := e.store.Closure(inputs)
	if err != nil {
		return fail("%v", err)
	}

	// Output locks, as the daemon takes them: a second build of the same
	// derivation waits, then finds the outputs valid.
	if err := os.MkdirAll(e.store.DB, 0o755); err != nil {
		return fail("%v", err)
	}
	for _, p := range d.OutputPaths() {
		l := flock.New(filepath.Join(e.store.DB, filepath.Base(p)+".lock"))
		if err := l.Lock(); err != nil {
			return fail("lock %s: %v", p, err)
		}
		defer l.Unlock()
	}
	if e.allValid(d.OutputPaths()) {
		return nil
	}
	return e.runBuilder(ctx, d, closure, opt)
}

// logFile is where the build log of d goes, like /var/log/guix/drvs/XX/REST.gz.
func (e *env) logFile(d *drv.Derivation) string {
	base := filepath.Base(d.Path)
	return filepath.Join(filepath.Dir(e.store.DB), "log", "drvs", base[:2], base[2:]+".gz")
}

func (e *env) runBuilder(ctx context.Context, d *drv.Derivation, closure []string, opt buildOptions) error {
	for _, p := range d.OutputPaths() {
		real, _ := e.store.Real(p)
		if err := os.RemoveAll(real); err != nil { // a stale, invalid output
			return fail("%v", err)
		}
	}
	tmp, err := os.MkdirTemp("", "guix-build-"+strings.TrimSuffix(filepath.Base(d.Path)[33:], ".drv")+"-")
	if err != nil {
		return fail("%v", err)
	}
	logPath := e.logFile(d)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return fail("%v", err)
	}
	logF, err := os.Create(logPath)
	if err != nil {
		return fail("%v", err)
	}
	logGz := gzip.NewWriter(logF)
	if opt.verbosity >= 1 {
		fmt.Fprintf(e.stderr, "building %s...\n", d.Path)
	}
	failure := e.execBuilder(ctx, d, tmp, opt, logGz)
	logGz.Close()
	logF.Close()
	if failure == "" {
		failure = e.registerOutputs(d, closure)
	}
	if failure != "" {
		if opt.verbosity >= 1 {
			fmt.Fprintln(e.stderr, failure)
			fmt.Fprintf(e.stderr, "build of %s failed\n", d.Path)
			fmt.Fprintf(e.stderr, "View build log at '%s'.\n", logPath)
		}
		for _, p := range d.OutputPaths() {
			real, _ := e.store.Real(p)
			os.RemoveAll(real)
		}
		if opt.keepFailed {
			fmt.Fprintf(e.stderr, "note: keeping build directory `%s'\n", tmp)
		} else {
			os.RemoveAll(tmp)
		}
		return errBuildFailed
	}
	os.RemoveAll(tmp)
	if opt.verbosity >= 2 {
		fmt.Fprintf(e.stderr, "successfully built %s\n", d.Path)
	}
	return nil
}

// builderEnv is the builder's environment, as the daemon sets it up, except
// that each output variable holds the output's PHYSICAL path: in tests the
// logical store dir of a build machine is not where its bytes live, and the
// builder must write its outputs where this store keeps them. Builders that
// need to read an input's bytes can find them under $FAKEGUIX_STORE.
func (e *env) builderEnv(d *drv.Derivation, tmp string) []string {
	vars := map[string]string{
		"PATH": "/path-not-set", "HOME": "/homeless-shelter", "NIX_STORE": e.store.Logical,
		"NIX_BUILD_TOP": tmp, "TMPDIR": tmp, "TEMPDIR": tmp, "TMP": tmp, "TEMP": tmp, "PWD": tmp,
		"NIX_BUILD_CORES": "1", "FAKEGUIX_STORE": e.store.Physical,
	}
	for _, v := range d.Env {
		vars[v.Name] = v.Value
	}
	for _, o := range d.Outputs {
		vars[o.Name], _ = e.store.Real(o.Path)
	}
	env := make([]string, 0, len(vars))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// execBuilder runs the builder in its own process group, with the time
// limits, and returns "" on success or the daemon's failure message.
func (e *env) execBuilder(ctx context.Context, d *drv.Derivation, tmp string, opt buildOptions, log io.Writer) string {
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Sprintf("builder for `%s' failed: %v", d.Path, err)
	}
	cmd := exec.Command(d.Builder, d.Args...)
	cmd.Dir = tmp
	cmd.Env = e.builderEnv(d, tmp)
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		return fmt.Sprintf("executing builder `%s': %v", d.Builder, err)
	}
	pw.Close()
	killGroup := func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }

	activity := make(chan struct{}, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 32<<10)
		for {
			n, err := pr.Read(buf)
			if n > 0 {
				if opt.verbosity >= 2 {
					e.stderr.Write(buf[:n])
				}
				log.Write(buf[:n])
				select {
				case activity <- struct{}{}:
				default:
				}
			}
			if err != nil {
				pr.Close()
				return
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var timeoutC, silenceC <-chan time.Time
	if opt.timeout > 0 {
		t := time.NewTimer(time.Duration(opt.timeout) * time.Second)
		defer t.Stop()
		timeoutC = t.C
	}
	var silence *time.Timer
	if opt.maxSilent > 0 {
		silence = time.NewTimer(time.Duration(opt.maxSilent) * time.Second)
		defer silence.Stop()
		silenceC = silence.C
	}
	var failure string
	var waitErr error
wait:
	for {
		select {
		case waitErr = <-exited:
			break wait
		case <-activity:
			if silence != nil {
				silence.Reset(time.Duration(opt.maxSilent) * time.Second)
			}
		case <-silenceC:
			failure = fmt.Sprintf("building of `%s' timed out after %d seconds of silence", d.Path, opt.maxSilent)
			killGroup()
		case <-timeoutC:
			failure = fmt.Sprintf("building of `%s' timed out after %d seconds", d.Path, opt.timeout)
			killGroup()
		case <-ctx.Done():
			failure = fmt.Sprintf("build of `%s' interrupted", d.Path)
			killGroup()
		}
	}
	killGroup() // whatever the builder left running, as the daemon does
	<-copied
	if failure != "" {
		return failure
	}
	if waitErr != nil {
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return fmt.Sprintf("builder for `%s' failed due to signal %d (%s)", d.Path, int(ws.Signal()), capitalize(ws.Signal().String()))
			}
			return fmt.Sprintf("builder for `%s' failed with exit code %d", d.Path, ee.ExitCode())
		}
		return fmt.Sprintf("builder for `%s' failed: %v", d.Path, waitErr)
	}
	return ""
}

// registerOutputs checks that every output was produced, canonicalises it
// (modes 0444/0555, mtime 1) and registers it with the references found in
// it. It returns "" or the daemon's failure message.
func (e *env) registerOutputs(d *drv.Derivation, closure []string) string {
	candidates := append(append([]string(nil), closure...), d.OutputPaths()...)
	var infos []drv.Info
	for _, p := range d.OutputPaths() {
		real, _ := e.store.Real(p)
		if _, err := os.Lstat(real); err != nil {
			return fmt.Sprintf("builder for `%s' failed to produce output path `%s'", d.Path, p)
		}
		if err := canonicalise(real); err != nil {
			return fmt.Sprintf("canonicalising %s: %v", p, err)
		}
		refs, err := drv.ScanReferences(real, candidates)
		if err != nil {
			return err.Error()
		}
		infos = append(infos, drv.Info{Path: p, References: refs, Deriver: d.Path})
	}
	for _, info := range infos {
		if err := e.store.Register(info); err != nil {
			return err.Error()
		}
	}
	return ""
}

func canonicalise(root string) error {
	var paths []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	one := time.Unix(1, 0)
	for i := len(paths) - 1; i >= 0; i-- { // children before their directory
		fi, err := os.Lstat(paths[i])
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			continue
		}
		mode := os.FileMode(0o444)
		if fi.IsDir() || fi.Mode()&0o111 != 0 {
			mode = 0o555
		}
		if err := os.Chmod(paths[i], mode); err != nil {
			return err
		}
		if err := os.Chtimes(paths[i], one, one); err != nil {
			return err
		}
	}
	return nil
}

// registerRoots makes each root (paired with the derivation at the same
// position, as guix build does) an indirect GC root: a symlink ROOT -> item,
// or ROOT-0, ROOT-1... for several items. A relative ROOT is relative to the
// working directory, whose parent must exist.
func (e *env) registerRoots(drvs []*drv.Derivation, roots []string, items func(*drv.Derivation) []string) error {
	for i, root := range roots {
		if i >= len(drvs) {
			break
		}
		if !filepath.IsAbs(root) {
			dir, err := filepath.Abs(filepath.Dir(root))
			if err == nil {
				dir, err = filepath.EvalSymlinks(dir)
			}
			if err != nil {
				return fail("failed to create GC root `%s': %s", root, strerror(err))
			}
			root = filepath.Join(dir, filepath.Base(root))
		}
		paths := items(drvs[i])
		links := []string{root}
		if len(paths) > 1 {
			links = nil
			for j := range paths {
				links = append(links, fmt.Sprintf("%s-%d", root, j))
			}
		}
		for j, link := range links {
			if err := os.Symlink(paths[j], link); err != nil {
				return fail("failed to create GC root `%s': %s", link, strerror(err))
			}
			auto := filepath.Join(filepath.Dir(e.store.DB), "gcroots", "auto")
			if err := os.MkdirAll(auto, 0o755); err == nil {
				name := drv.StorePath("", "root:"+link, "r")
				os.Symlink(link, filepath.Join(auto, filepath.Base(name)[:32]))
			}
		}
	}
	return nil
}

// strerror words err like C's strerror ("No such file or directory").
func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return capitalize(errno.Error())
	}
	return err.Error()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
