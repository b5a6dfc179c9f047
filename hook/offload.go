package hook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"offload/locking"
	"offload/machines"
	"offload/sshexec"
	"offload/storeio"
)

// beforeBuildError is a failure that happened before the build started on the
// machine: nothing ran there, so the build may go to another machine.
type beforeBuildError struct{ Err error }

func (e *beforeBuildError) Error() string { return e.Err.Error() }
func (e *beforeBuildError) Unwrap() error { return e.Err }

// localError is a failure on our side (the local guix could not export): no machine
// is to blame, and no other machine would do better.
type localError struct{ Err error }

func (e *localError) Error() string { return e.Err.Error() }
func (e *localError) Unwrap() error { return e.Err }

// rootsDir is where the remote GC roots of builds in flight live, relative to the
// remote user's home directory (where ssh starts remote commands).
const rootsDir = ".cache/guix/offload"

// offload performs an accepted build on machine m (BEHAVIOUR.md 1, 2, 7, 12).
func (h *Hook) offload(ctx context.Context, m *machines.Machine, req Request, inputs, outputs []string) error {
	root := rootName(req.Drv)
	defer h.removeRoots(h.target(m), root)

	mode, err := ParseCompressionMode(h.Conf.Compression)
	if err != nil {
		h.say("offload: %v; using %s", err, mode)
	}
	comp, err := h.upload(ctx, m, req.Drv, inputs, mode)
	if err != nil {
		return &beforeBuildError{Err: err}
	}
	if err := h.build(ctx, m, req, root); err != nil {
		return err
	}
	if len(outputs) == 0 {
		return nil
	}
	if err := h.download(ctx, m, outputs, comp); err != nil {
		return err
	}
	h.say("done with offloaded '%s'", req.Drv)
	return nil
}

// rootName names this build's remote GC roots after this host and process, so that
// concurrent hooks and hosts never share one.
func rootName(drv string) string {
	return fmt.Sprintf("%s-%d-%s", rootHost(), os.Getpid(), strings.TrimSuffix(path.Base(drv), ".drv"))
}

// rootHost is this host's name as it starts our remote GC roots' names.
func rootHost() string {
	host, _ := os.Hostname()
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r < ' ' {
			return '_'
		}
		return r
	}, host)
}

// staleRoots picks, from the names of the remote roots directory, those this host's
// hooks made and whose process is gone: a hook killed by the daemon (SIGKILL) or cut
// off from the machine could not remove them, and they would keep the outputs from
// the machine's garbage collector for ever.
func staleRoots(names []string, alive func(pid int) bool) []string {
	prefix := rootHost() + "-"
	var stale []string
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, prefix)
		if !ok || strings.ContainsAny(n, "/\x00") || strings.HasPrefix(n, "-") {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || alive(pid) {
			continue
		}
		stale = append(stale, n)
	}
	return stale
}

// processAlive tells whether a local process exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// machineLock takes a machine's upload or download lock, saying who holds it while
// waiting (BEHAVIOUR.md 7-8).
func (h *Hook) machineLock(ctx context.Context, m *machines.Machine, kind, reason string) (*locking.Lock, error) {
	file := locking.MachineLock(h.Conf.StateDir, m.ID(), kind)
	if l, ok, err := locking.TryAcquire(file, reason); err != nil {
		return nil, err
	} else if ok {
		return l, nil
	}
	if pid, why, held, _ := locking.Holder(file); held {
		h.say("offload: waiting for the %s lock of machine '%s' (held by process %d: %s)", kind, m.Display(), pid, why)
	}
	wait := h.Conf.LockWait
	if wait <= 0 {
		wait = 30 * time.Minute
	}
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return locking.Acquire(lctx, file, reason)
}

// upload sends the .drv and the inputs the machine lacks: one round trip to ask which
// are missing (and which decompressors the machine has), one stream of `guix archive
// --export` into `guix archive --import`, compressed as mode and the machine allow. It
// returns the compression chosen, for the download.
func (h *Hook) upload(ctx context.Context, m *machines.Machine, drv string, inputs []string, mode string) (Compression, error) {
	lock, err := h.machineLock(ctx, m, "upload", "sending inputs of "+drv)
	if err != nil {
		return "", err
	}
	defer lock.Release()

	want := uniqueSorted(append([]string{drv}, inputs...))
	out, err := h.Runner.OutputRemote(ctx, h.target(m), []string{"sh", "-c", missingScript},
		strings.NewReader(strings.Join(want, "\n")+"\n"))
	if err != nil {
		return "", fmt.Errorf("asking which inputs it lacks: %w", err)
	}
	paths, has := parseMissing(string(out))
	comp, note := ChooseCompression(mode, has)
	if note != "" {
		h.say("offload: machine '%s': %s", m.Display(), note)
	}
	wanted := map[string]bool{}
	for _, p := range want {
		wanted[p] = true
	}
	var missing []string
	for _, p := range paths {
		if !wanted[p] {
			return "", fmt.Errorf("machine '%s' answered `guix archive --missing` with a path we did not ask about: %q", m.Display(), p)
		}
		missing = append(missing, p)
	}
	if len(missing) == 0 {
		h.say("offload: machine '%s' already has the %d inputs", m.Display(), len(want))
		return comp, nil
	}
	h.say("offload: sending %d store item%s to '%s' (%s)...", len(missing), plural(len(missing)), m.Display(), comp)
	start := time.Now()
	wire, raw, err := h.pipeExport(ctx, m, missing, comp)
	if err != nil {
		return "", fmt.Errorf("sending %d store items: %w", len(missing), err)
	}
	h.say("offload: sent %d store item%s (%s) to '%s' in %.1fs", len(missing), plural(len(missing)), comp.describe(wire, raw), m.Display(), time.Since(start).Seconds())
	return comp, nil
}

// pipeExport streams the local `guix archive --export PATHS`, compressed with comp,
// into `guix archive --import` on the machine and returns the bytes that went through
// ssh (wire) and the size of the export itself (raw).
func (h *Hook) pipeExport(ctx context.Context, m *machines.Machine, paths []string, comp Compression) (wire, raw int64, err error) {
	t := h.bulkTarget(m, comp)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The first side to fail is the cause; the other side's error (EPIPE, killed) is
	// its consequence and is not reported.
	var once sync.Once
	var first error
	fail := func(err error) {
		once.Do(func() { first = err })
		cancel()
	}
	pr, pw := io.Pipe()
	zw, err := newCompressor(comp, pw)
	if err != nil {
		return 0, 0, fmt.Errorf("%s compressor: %w", comp, err)
	}
	var dst io.Writer = pw
	if zw != nil {
		dst = zw
	}
	rawCount := &countingWriter{w: dst}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		argv := append([]string{h.Conf.Guix, "archive", "--export"}, paths...)
		err := h.Runner.Run(ctx, argv, sshexec.Stdio{Stdout: rawCount})
		if err != nil {
			fail(&localError{fmt.Errorf("local `guix archive --export`: %w", err)})
			pw.CloseWithError(err) // no end of stream: the machine sees it cut short
			if zw != nil {
				zw.Close() // fails at once on the closed pipe; frees the encoder
			}
			return
		}
		if zw != nil {
			// The end of the stream; a failure here is the reader's doing (the
			// import ended), and the other side reports it.
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	cr := &countingReader{r: pr}
	stop := make(chan struct{})
	go h.reportProgress("sending to '"+m.Display()+"'", cr, stop)
	err = h.Runner.RunRemote(ctx, t, importCommand(comp), sshexec.Stdio{Stdin: cr})
	close(stop)
	if err != nil {
		fail(err)
	}
	pr.CloseWithError(errors.New("import ended"))
	wg.Wait()
	return cr.n.Load(), rawCount.n.Load(), first
}

// build runs `guix build` on the machine with the daemon's limits, streaming its log
// to fd 4, and classifies its failure.
func (h *Hook) build(ctx context.Context, m *machines.Machine, req Request, root string) error {
	h.say("offloading '%s' to '%s'...", req.Drv, m.Display())
	h.say("@ build-remote %s %s", req.Drv, m.Display())
	args := []string{"--verbosity=3"}
	if h.Conf.MaxSilentTime > 0 {
		args = append(args, fmt.Sprintf("--max-silent-time=%d", h.Conf.MaxSilentTime))
	}
	if h.Conf.BuildTimeout > 0 {
		args = append(args, fmt.Sprintf("--timeout=%d", h.Conf.BuildTimeout))
		// Stop waiting locally too, so a hung connection cannot keep us alive.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(h.Conf.BuildTimeout)*time.Second+buildMargin)
		defer cancel()
	}
	// Root the .drv first (it was just imported and nothing else protects it), then
	// build with the outputs rooted until we have fetched them.
	script := `set -e; d=$1; r=$2; drv=$3; shift 3
mkdir -p "$d"
guix build -d -r "$d/$r.drv" "$drv" >/dev/null
exec guix build -r "$d/$r" "$@" "$drv" >/dev/null`
	remote := append([]string{"sh", "-c", script, "sh", rootsDir, root, req.Drv}, args...)
	tail := &tailBuffer{max: 64 << 10}
	err := h.Runner.RunRemote(ctx, h.target(m), remote, sshexec.Stdio{Stderr: io.MultiWriter(h.Log, tail)})
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no result from machine '%s' %s after the build timeout: %w", m.Display(), buildMargin, ErrTimedOut)
	}
	var re *sshexec.RemoteError
	if errors.As(err, &re) {
		switch classify(tail.String(), req.Drv) {
		case ExitTimedOut:
			return fmt.Errorf("derivation '%s' offloaded to '%s' timed out: %w", req.Drv, m.Display(), ErrTimedOut)
		case ExitBuildFailed:
			return fmt.Errorf("derivation '%s' offloaded to '%s' failed: %w", req.Drv, m.Display(), ErrBuildFailed)
		}
		return fmt.Errorf("running guix build on machine '%s': %w", m.Display(), err)
	}
	return fmt.Errorf("building '%s' on machine '%s': %w", req.Drv, m.Display(), err)
}

// buildMargin is how long after the build timeout we keep waiting for the machine.
const buildMargin = 60 * time.Second

// classify tells, from the end of `guix build`'s stderr, whether the build itself
// failed or timed out (the daemon's own messages, nix/libstore/build.cc), as opposed
// to guix not running at all.
func classify(stderr, drv string) int {
	timedOut, failed := false, false
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.Contains(line, drv) {
			continue
		}
		switch {
		case strings.Contains(line, "timed out after"):
			timedOut = true
		case strings.HasPrefix(line, "@ build-failed "+drv),
			strings.Contains(line, "build of `"+drv+"' failed"),
			strings.Contains(line, "builder for `"+drv+"' failed"):
			failed = true
		}
	}
	switch {
	case timedOut:
		return ExitTimedOut
	case failed:
		return ExitBuildFailed
	}
	return ExitTransient
}

// download fetches the outputs, compressed on the wire with comp, and restores them
// into the local store, checking each item's signature against the local ACL (the
// daemon holds the output locks, so `guix archive --import` would deadlock:
// PROTOCOL.md).
func (h *Hook) download(ctx context.Context, m *machines.Machine, outputs []string, comp Compression) error {
	lock, err := h.machineLock(ctx, m, "download", "retrieving "+strings.Join(outputs, " "))
	if err != nil {
		return err
	}
	defer lock.Release()

	// Leftovers of hooks the daemon killed mid-import (it uses SIGKILL).
	if removed, err := storeio.CleanStaleTemps(h.Conf.StoreDir); err == nil && len(removed) > 0 {
		h.say("offload: removed %d stale temporary director%s from %s", len(removed), map[bool]string{true: "y", false: "ies"}[len(removed) == 1], h.Conf.StoreDir)
	}
	acl, err := storeio.LoadACL(path.Join(h.Conf.ConfDir, "acl"))
	if err != nil {
		return fmt.Errorf("cannot check what machine '%s' returns: %w", m.Display(), err)
	}
	if comp == "" {
		comp = CompressSSH
	}
	h.say("retrieving %d store item%s from '%s' (%s)...", len(outputs), plural(len(outputs)), m.Display(), comp)
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	var runErr error
	done := make(chan struct{})
	stderr := &tailBuffer{max: 16 << 10}
	go func() {
		err := h.Runner.RunRemote(ctx, h.bulkTarget(m, comp), exportCommand(comp, outputs),
			sshexec.Stdio{Stdout: pw, Stderr: stderr})
		runErr = err
		close(done) // before the pipe ends: an import that fails on that end can tell
		pw.CloseWithError(err)
	}()
	cr := &countingReader{r: pr}
	stop := make(chan struct{})
	go h.reportProgress("retrieving from '"+m.Display()+"'", cr, stop)
	// ImportBundle reads to the end of the stream before it places anything: for a
	// compressed stream, through the decompressor's own checksum, and in any case to
	// the end of the machine's export (its exit status).
	var bundle io.Reader = cr
	if comp.streamed() {
		dec := newDecompressor(comp, cr)
		defer dec.Close()
		bundle = dec
	}
	raw := &countingReader{r: bundle}
	items, impErr := storeio.ImportBundle(raw, storeio.ImportOptions{
		StoreDir: h.Conf.StoreDir,
		Allowed:  outputs,
		ACL:      acl,
		Log:      h.Out,
		Replace:  true, // the daemon asked for them: whatever is there is not valid
	})
	close(stop)
	pr.CloseWithError(errors.New("import ended"))
	machineFirst := false // the machine's export ended before the import failed
	if impErr != nil {
		select {
		case <-done:
			machineFirst = true
		default:
		}
		cancel() // stop the machine's export: we refuse what it sends
	}
	<-done
	if runErr != nil && impErr != nil && machineFirst {
		return fmt.Errorf("retrieving outputs from machine '%s': %w", m.Display(), runErr)
	}
	if impErr != nil && storeio.IsRefusal(impErr) {
		return fmt.Errorf("refusing what machine '%s' returned: %w", m.Display(), impErr)
	}
	if impErr != nil {
		return fmt.Errorf("restoring the outputs from machine '%s' into %s: %w", m.Display(), h.Conf.StoreDir, impErr)
	}
	if runErr != nil {
		return fmt.Errorf("retrieving outputs from machine '%s': %w", m.Display(), runErr)
	}
	got := map[string]bool{}
	for _, it := range items {
		got[it.Path] = true
	}
	for _, o := range outputs {
		if !got[o] {
			return fmt.Errorf("machine '%s' did not return output %s", m.Display(), o)
		}
	}
	h.say("offload: retrieved %d store item%s (%s) from '%s' in %.1fs", len(items), plural(len(items)), comp.describe(cr.n.Load(), raw.n.Load()), m.Display(), time.Since(start).Seconds())
	return nil
}

// removeRoots deletes this build's remote GC roots, whatever happened; it gets its own
// short deadline since the hook's context may be cancelled by then.
func (h *Hook) removeRoots(t sshexec.Target, root string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*h.connectTimeout())
	defer cancel()
	// Remove ours, and list what else is there (one round trip).
	script := `rm -f -- "$1/$2.drv" "$1/$2" "$1/$2"-*; cd "$1" 2>/dev/null && ls -1A`
	out, err := h.Runner.OutputRemote(ctx, t, []string{"sh", "-c", script, "sh", rootsDir, root}, nil)
	if err != nil {
		return
	}
	stale := staleRoots(strings.Fields(string(out)), processAlive)
	if len(stale) == 0 {
		return
	}
	// A second round trip only when earlier hooks of this host left roots behind.
	_ = h.Runner.RunRemote(ctx, t, append([]string{"sh", "-c", `cd "$1" && shift && rm -f -- "$@"`, "sh", rootsDir}, stale...), sshexec.Stdio{})
}

func uniqueSorted(ps []string) []string {
	sort.Strings(ps)
	out := ps[:0]
	for i, p := range ps {
		if i == 0 || p != ps[i-1] {
			out = append(out, p)
		}
	}
	return out
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// countingReader counts the bytes read through it (read by another goroutine).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// countingWriter counts the bytes written through it (read by another goroutine).
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// progressEvery is how often a long transfer says how far it got (Hook.ProgressEvery
// overrides it). Besides informing the user, each line resets the daemon's
// max-silent-time clock, which also runs while we transfer.
const progressEvery = 15 * time.Second

// reportProgress prints the bytes counted so far every progressEvery until stop is
// closed.
func (h *Hook) reportProgress(what string, c *countingReader, stop <-chan struct{}) {
	every := h.ProgressEvery
	if every <= 0 {
		every = progressEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			h.say("offload: %s: %s so far", what, mib(c.n.Load()))
		}
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
