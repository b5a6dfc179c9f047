// Package builder is the stand-in daemon's build engine, shared by fakeguix (`guix
// build`) and workerd (BuildPaths): it realises a derivation of the fake store
// (offload/integration/drv), input derivations first, under the output locks the daemon
// takes; runs the builder for real in its own process group, with the time limits; and
// canonicalises and registers the outputs with the references found in them.
//
// It does not parse command lines or speak any protocol: its callers do.
package builder

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"offload/integration/drv"
)

// Options are a build's limits and how much it says.
type Options struct {
	MaxSilent  int // seconds, 0 = none
	Timeout    int // seconds, 0 = none
	Verbosity  int
	KeepFailed bool // -K
	// BuildLog, when set, receives the builder's output as it comes (the daemon's
	// log forwarding), whatever Verbosity says; otherwise Stderr gets it at verbosity 2
	// and up, as `guix build` shows it.
	BuildLog io.Writer
	// Trace, when set, receives the daemon's "@ build-..." trace lines (without the
	// newline): started, succeeded, failed.
	Trace func(line string)
}

// Builder builds derivations of Store, printing what `guix build` shows on Stderr.
type Builder struct {
	Store  drv.Store
	Stderr io.Writer
}

// ErrFailed marks a failed (or timed out) build; callers turn it into "build of `DRV'
// failed", as the daemon's error reads.
var ErrFailed = errors.New("build failed")

// Failure is how a build failed: errors.Is(f, ErrFailed) holds. Timeout says that a
// time limit ended it (the daemon's status 101 rather than 100).
type Failure struct {
	Drv     string
	Msg     string // the daemon's line, e.g. "builder for `D' failed with exit code 1"
	Timeout bool
}

func (f *Failure) Error() string        { return f.Msg }
func (f *Failure) Is(target error) bool { return target == ErrFailed }

// AllValid reports whether every path is valid in the store.
func (b *Builder) AllValid(paths []string) bool {
	for _, p := range paths {
		if !b.Store.Valid(p) {
			return false
		}
	}
	return true
}

// NeededOutputs returns the paths of the outputs of in.Path that d needs.
func (b *Builder) NeededOutputs(in drv.InputDrv) (*drv.Derivation, []string, error) {
	dep, err := b.Store.Read(in.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("%v", err)
	}
	var paths []string
	for _, name := range in.Outputs {
		o, ok := dep.Output(name)
		if !ok {
			return nil, nil, fmt.Errorf("reference to invalid output '%s' of derivation '%s'", name, in.Path)
		}
		paths = append(paths, o.Path)
	}
	return dep, paths, nil
}

// ToBuild appends to todo the derivations that realising d would build,
// dependencies first.
func (b *Builder) ToBuild(d *drv.Derivation, todo *[]string, seen map[string]bool) error {
	if seen[d.Path] || b.AllValid(d.OutputPaths()) {
		return nil
	}
	seen[d.Path] = true
	for _, in := range d.InputDrvs {
		dep, paths, err := b.NeededOutputs(in)
		if err != nil {
			return err
		}
		if !b.AllValid(paths) {
			if err := b.ToBuild(dep, todo, seen); err != nil {
				return err
			}
		}
	}
	*todo = append(*todo, d.Path)
	return nil
}

// Realise makes the outputs of d valid, building its missing input
// derivations first.
func (b *Builder) Realise(ctx context.Context, d *drv.Derivation, opt Options) error {
	if b.AllValid(d.OutputPaths()) {
		return nil
	}
	var inputs []string // the input closure roots: needed outputs and sources
	for _, in := range d.InputDrvs {
		dep, paths, err := b.NeededOutputs(in)
		if err != nil {
			return err
		}
		if !b.AllValid(paths) {
			if err := b.Realise(ctx, dep, opt); err != nil {
				return err
			}
		}
		inputs = append(inputs, paths...)
	}
	for _, src := range d.InputSrcs {
		if !b.Store.Valid(src) {
			return fmt.Errorf("path `%s' is not valid", src)
		}
	}
	inputs = append(inputs, d.InputSrcs...)
	closure, err := b.Store.Closure(inputs)
	if err != nil {
		return fmt.Errorf("%v", err)
	}

	// Output locks, as the daemon takes them: a second build of the same
	// derivation waits, then finds the outputs valid.
	if err := os.MkdirAll(b.Store.DB, 0o755); err != nil {
		return fmt.Errorf("%v", err)
	}
	for _, p := range d.OutputPaths() {
		l := flock.New(filepath.Join(b.Store.DB, filepath.Base(p)+".lock"))
		if err := l.Lock(); err != nil {
			return fmt.Errorf("lock %s: %v", p, err)
		}
		defer l.Unlock()
	}
	if b.AllValid(d.OutputPaths()) {
		return nil
	}
	return b.runBuilder(ctx, d, closure, opt)
}

// LogFile is where the build log of d goes, like /var/log/guix/drvs/XX/REST.gz.
func (b *Builder) LogFile(d *drv.Derivation) string {
	base := filepath.Base(d.Path)
	return filepath.Join(filepath.Dir(b.Store.DB), "log", "drvs", base[:2], base[2:]+".gz")
}

func (b *Builder) runBuilder(ctx context.Context, d *drv.Derivation, closure []string, opt Options) error {
	for _, p := range d.OutputPaths() {
		real, _ := b.Store.Real(p)
		if err := os.RemoveAll(real); err != nil { // a stale, invalid output
			return fmt.Errorf("%v", err)
		}
	}
	tmp, err := os.MkdirTemp("", "guix-build-"+strings.TrimSuffix(filepath.Base(d.Path)[33:], ".drv")+"-")
	if err != nil {
		return fmt.Errorf("%v", err)
	}
	logPath := b.LogFile(d)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return fmt.Errorf("%v", err)
	}
	logF, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("%v", err)
	}
	logGz := gzip.NewWriter(logF)
	if opt.Verbosity >= 1 {
		fmt.Fprintf(b.Stderr, "building %s...\n", d.Path)
	}
	failure, timedOut := b.execBuilder(ctx, d, tmp, opt, logGz, logPath)
	logGz.Close()
	logF.Close()
	if failure == "" {
		failure = b.registerOutputs(d, closure)
	}
	if failure != "" {
		if opt.Verbosity >= 1 {
			fmt.Fprintln(b.Stderr, failure)
			fmt.Fprintf(b.Stderr, "build of %s failed\n", d.Path)
			fmt.Fprintf(b.Stderr, "View build log at '%s'.\n", logPath)
		}
		for _, p := range d.OutputPaths() {
			real, _ := b.Store.Real(p)
			os.RemoveAll(real)
		}
		if opt.KeepFailed {
			fmt.Fprintf(b.Stderr, "note: keeping build directory `%s'\n", tmp)
		} else {
			os.RemoveAll(tmp)
		}
		if opt.Trace != nil {
			if timedOut {
				opt.Trace(fmt.Sprintf("@ build-failed %s - timeout", d.Path))
			} else {
				opt.Trace(fmt.Sprintf("@ build-failed %s - 1 %s", d.Path, failure))
			}
		}
		return &Failure{Drv: d.Path, Msg: failure, Timeout: timedOut}
	}
	os.RemoveAll(tmp)
	if opt.Trace != nil {
		opt.Trace(fmt.Sprintf("@ build-succeeded %s -", d.Path))
	}
	if opt.Verbosity >= 2 {
		fmt.Fprintf(b.Stderr, "successfully built %s\n", d.Path)
	}
	return nil
}

// builderEnv is the builder's environment, as the daemon sets it up, except
// that each output variable holds the output's PHYSICAL path: in tests the
// logical store dir of a build machine is not where its bytes live, and the
// builder must write its outputs where this store keeps them. Builders that
// need to read an input's bytes can find them under $FAKEGUIX_STORE.
func (b *Builder) builderEnv(d *drv.Derivation, tmp string) []string {
	vars := map[string]string{
		"PATH": "/path-not-set", "HOME": "/homeless-shelter", "NIX_STORE": b.Store.Logical,
		"NIX_BUILD_TOP": tmp, "TMPDIR": tmp, "TEMPDIR": tmp, "TMP": tmp, "TEMP": tmp, "PWD": tmp,
		"NIX_BUILD_CORES": "1", "FAKEGUIX_STORE": b.Store.Physical,
	}
	for _, v := range d.Env {
		vars[v.Name] = v.Value
	}
	for _, o := range d.Outputs {
		vars[o.Name], _ = b.Store.Real(o.Path)
	}
	env := make([]string, 0, len(vars))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}

// execBuilder runs the builder in its own process group, with the time
// limits, and returns "" on success or the daemon's failure message, and whether a
// time limit ended it.
func (b *Builder) execBuilder(ctx context.Context, d *drv.Derivation, tmp string, opt Options, log io.Writer, logPath string) (string, bool) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Sprintf("builder for `%s' failed: %v", d.Path, err), false
	}
	cmd := exec.Command(d.Builder, d.Args...)
	cmd.Dir = tmp
	cmd.Env = b.builderEnv(d, tmp)
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		return fmt.Sprintf("executing builder `%s': %v", d.Builder, err), false
	}
	pw.Close()
	if opt.Trace != nil {
		opt.Trace(fmt.Sprintf("@ build-started %s - %s %s %d", d.Path, d.System, logPath, cmd.Process.Pid))
	}
	killGroup := func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }

	activity := make(chan struct{}, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 32<<10)
		for {
			n, err := pr.Read(buf)
			if n > 0 {
				if opt.BuildLog != nil {
					opt.BuildLog.Write(buf[:n])
				} else if opt.Verbosity >= 2 {
					b.Stderr.Write(buf[:n])
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
	if opt.Timeout > 0 {
		t := time.NewTimer(time.Duration(opt.Timeout) * time.Second)
		defer t.Stop()
		timeoutC = t.C
	}
	var silence *time.Timer
	if opt.MaxSilent > 0 {
		silence = time.NewTimer(time.Duration(opt.MaxSilent) * time.Second)
		defer silence.Stop()
		silenceC = silence.C
	}
	var failure string
	var timedOut bool
	var waitErr error
wait:
	for {
		select {
		case waitErr = <-exited:
			break wait
		case <-activity:
			if silence != nil {
				silence.Reset(time.Duration(opt.MaxSilent) * time.Second)
			}
		case <-silenceC:
			failure = fmt.Sprintf("building of `%s' timed out after %d seconds of silence", d.Path, opt.MaxSilent)
			timedOut = true
			killGroup()
		case <-timeoutC:
			failure = fmt.Sprintf("building of `%s' timed out after %d seconds", d.Path, opt.Timeout)
			timedOut = true
			killGroup()
		case <-ctx.Done():
			failure = fmt.Sprintf("build of `%s' interrupted", d.Path)
			killGroup()
		}
	}
	killGroup() // whatever the builder left running, as the daemon does
	<-copied
	if failure != "" {
		return failure, timedOut
	}
	if waitErr != nil {
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return fmt.Sprintf("builder for `%s' failed due to signal %d (%s)", d.Path, int(ws.Signal()), capitalize(ws.Signal().String())), false
			}
			return fmt.Sprintf("builder for `%s' failed with exit code %d", d.Path, ee.ExitCode()), false
		}
		return fmt.Sprintf("builder for `%s' failed: %v", d.Path, waitErr), false
	}
	return "", false
}

// registerOutputs checks that every output was produced, canonicalises it
// (modes 0444/0555, mtime 1) and registers it with the references found in
// it. It returns "" or the daemon's failure message.
func (b *Builder) registerOutputs(d *drv.Derivation, closure []string) string {
	candidates := append(append([]string(nil), closure...), d.OutputPaths()...)
	var infos []drv.Info
	for _, p := range d.OutputPaths() {
		real, _ := b.Store.Real(p)
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
		if err := b.Store.Register(info); err != nil {
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

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
