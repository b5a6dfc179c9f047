// Command fakedaemon plays guix-daemon for one build through a build hook,
// for `make demo` and for trying the hook by hand:
//
//	fakedaemon [-hook PATH] [-max-silent N] [-timeout N] [-trace]
//	           [-wants-local 0|1] [-retry 1s] build DRV
//
// It reads the .drv from the fake store (NIX_STORE_DIR, FAKEGUIX_STORE,
// FAKEGUIX_DB, as fakeguix), computes the inputs line (the closure of the
// .drv, of the needed outputs of its inputs and of its sources) and the
// missing outputs as the daemon does, starts the hook as `HOOK offload
// SYSTEM MAX-SILENT TRACE TIMEOUT`, asks it, retries after postpone,
// relays its messages and build log, enforces the time limits on it as the
// daemon does (SIGKILL on its process group), then reports like the daemon.
//
// Exit status: 0 built, 100 build failed, 101 timed out, 2 declined (the
// daemon would build locally), 1 hook failed (transient) or usage error.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"offload/integration/daemon"
	"offload/integration/drv"
)

const (
	exitBuilt    = 0
	exitHookFail = 1
	exitDeclined = 2
	exitFailed   = 100
	exitTimedOut = 101
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv, os.Environ()))
}

type config struct {
	hook       string
	maxSilent  int
	timeout    int
	trace      bool
	wantsLocal bool
	retry      time.Duration
	drvPath    string
}

func parse(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("fakedaemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &config{}
	fs.StringVar(&c.hook, "hook", "offload", "the build hook program")
	fs.IntVar(&c.maxSilent, "max-silent", 0, "max-silent-time in seconds (0: none)")
	fs.IntVar(&c.timeout, "timeout", 0, "build timeout in seconds (0: none)")
	fs.BoolVar(&c.trace, "trace", false, "ask for build traces (PRINT-BUILD-TRACE 1)")
	wl := fs.Int("wants-local", 0, "1 when the daemon has a free local build slot")
	fs.DurationVar(&c.retry, "retry", 5*time.Second, "delay before asking again after postpone")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	c.wantsLocal = *wl == 1
	if fs.NArg() != 2 || fs.Arg(0) != "build" {
		return nil, fmt.Errorf("usage: fakedaemon [flags] build DRV")
	}
	c.drvPath = fs.Arg(1)
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string, environ []string) int {
	c, err := parse(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "fakedaemon: %v\n", err)
		return exitHookFail
	}
	st := drv.StoreFromEnv(getenv)
	d, err := st.Read(c.drvPath)
	if err == nil && !st.Valid(c.drvPath) {
		err = fmt.Errorf("path `%s' is not valid", c.drvPath)
	}
	if err != nil {
		fmt.Fprintf(stderr, "fakedaemon: %v\n", err)
		return exitHookFail
	}
	inputs, err := st.BuildInputs(d)
	if err != nil {
		fmt.Fprintf(stderr, "fakedaemon: inputs of %s: %v\n", d.Path, err)
		return exitHookFail
	}
	missing := st.MissingOutputs(d)
	if len(missing) == 0 {
		fmt.Fprintf(stdout, "built (already valid): %s\n", d.Path)
		return exitBuilt
	}
	trace := "0"
	if c.trace {
		trace = "1"
	}
	argv := []string{c.hook, "offload", d.System, strconv.Itoa(c.maxSilent), trace, strconv.Itoa(c.timeout)}
	msgs := &prefixWriter{w: stderr, prefix: "hook: "}
	logw := &prefixWriter{w: stdout, prefix: "log: "}
	h, err := daemon.StartWith(ctx, argv, environ, daemon.Options{Messages: msgs, Log: logw})
	if err != nil {
		fmt.Fprintf(stderr, "fakedaemon: %v\n", err)
		return exitHookFail
	}
	defer h.Kill()
	for {
		answer, err := h.Request(c.wantsLocal, d.System, d.Path, d.Features())
		if err != nil {
			fmt.Fprintf(stderr, "fakedaemon: %v\n", err)
			return exitHookFail
		}
		if answer == "accept" {
			break
		}
		if answer == "decline" {
			h.CloseStdin()
			h.Wait()
			msgs.Flush()
			fmt.Fprintln(stdout, "declined: would build locally")
			return exitDeclined
		}
		fmt.Fprintf(stderr, "postponed: asking again in %v\n", c.retry)
		select {
		case <-time.After(c.retry):
		case <-ctx.Done():
			return exitHookFail
		}
	}
	if err := h.SendPaths(inputs, missing); err != nil {
		fmt.Fprintf(stderr, "fakedaemon: %v\n", err)
		return exitHookFail
	}
	timedOut := watch(h, c)
	status, signaled, err := h.Wait()
	msgs.Flush()
	logw.Flush()
	if err != nil {
		fmt.Fprintf(stderr, "fakedaemon: %v\n", err)
		return exitHookFail
	}
	if why := timedOut(); why != "" {
		fmt.Fprintf(stdout, "timed out: building of `%s' %s\n", d.Path, why)
		return exitTimedOut
	}
	switch {
	case signaled:
		fmt.Fprintln(stdout, "hook failed (transient): killed by a signal")
		return exitHookFail
	case status == 100:
		fmt.Fprintf(stdout, "build failed (permanent): %s\n", d.Path)
		return exitFailed
	case status == 101:
		fmt.Fprintf(stdout, "timed out: %s\n", d.Path)
		return exitTimedOut
	case status != 0:
		fmt.Fprintf(stdout, "hook failed (transient): exit status %d\n", status)
		return exitHookFail
	}
	if err := registerOutputs(st, d, inputs, missing); err != nil {
		fmt.Fprintf(stdout, "hook failed: %v\n", err)
		return exitHookFail
	}
	fmt.Fprintf(stdout, "built: %s\n", d.Path)
	for _, p := range d.OutputPaths() {
		fmt.Fprintln(stdout, p)
	}
	return exitBuilt
}

// watch enforces max-silent-time and the build timeout on the hook as the
// daemon does (output on fds 1/2 and 4 resets the silence clock; SIGKILL on
// the process group). It returns a function telling why it killed the hook
// ("" if it did not), to call after Wait.
func watch(h *daemon.Hook, c *config) func() string {
	if c.maxSilent == 0 && c.timeout == 0 {
		return func() string { return "" }
	}
	var mu sync.Mutex
	why := ""
	stop := make(chan struct{})
	start := time.Now()
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				reason := ""
				if c.maxSilent > 0 && now.Sub(h.LastOutput()) >= time.Duration(c.maxSilent)*time.Second {
					reason = fmt.Sprintf("timed out after %d seconds of silence", c.maxSilent)
				} else if c.timeout > 0 && now.Sub(start) >= time.Duration(c.timeout)*time.Second {
					reason = fmt.Sprintf("timed out after %d seconds", c.timeout)
				}
				if reason != "" {
					mu.Lock()
					why = reason
					mu.Unlock()
					h.Kill()
					return
				}
			}
		}
	}()
	return func() string {
		close(stop)
		mu.Lock()
		defer mu.Unlock()
		return why
	}
}

// registerOutputs does what the daemon does after a hook exits 0: every
// missing output must now be present on disk; it registers them, with the
// references found in them.
func registerOutputs(st drv.Store, d *drv.Derivation, inputs, missing []string) error {
	candidates := append(append([]string(nil), inputs...), d.OutputPaths()...)
	var infos []drv.Info
	for _, p := range missing {
		real, err := st.Real(p)
		if err == nil {
			_, err = os.Lstat(real)
		}
		if err != nil {
			return fmt.Errorf("failed to produce output path `%s'", p)
		}
		refs, err := drv.ScanReferences(real, candidates)
		if err != nil {
			return err
		}
		infos = append(infos, drv.Info{Path: p, References: refs, Deriver: d.Path})
	}
	for _, info := range infos {
		if err := st.Register(info); err != nil {
			return err
		}
	}
	return nil
}

// prefixWriter writes each complete line to w with a prefix.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s", p.prefix, p.buf[:i+1])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// Flush writes an unterminated last line, if any.
func (p *prefixWriter) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf)
		p.buf = nil
	}
}
