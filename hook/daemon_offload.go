package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"

	"offload/machines"
	"offload/sshexec"
	"offload/workerproto"
)

// offloadDaemon performs an accepted build on m by speaking to m's guix-daemon (conn,
// which it closes): one query for what the machine lacks, the missing inputs sent
// (daemon_upload.go), the build with the daemon's limits and its log relayed to fd 4 as
// it comes, and the outputs exported, signed, straight into the all-or-nothing restore
// (daemon_download.go). Whatever the connection's worker holds (the temporary GC roots
// of the inputs and the .drv, its settings) ends with it, on the machine, however the
// hook ends. A failure before the build starts is a *beforeBuildError.
func (h *Hook) offloadDaemon(ctx context.Context, m *machines.Machine, t sshexec.Target, conn *workerproto.Conn, req Request, inputs, outputs []string) error {
	defer conn.Close()
	began := time.Now()
	h.learned = learned{}
	if err := conn.SetOptions(ctx, h.daemonOptions(false)); err != nil {
		return &beforeBuildError{Err: fmt.Errorf("setting the build options: %w", err)}
	}
	// The machine's shared build slot, taken by one small remote shell while the inputs
	// go up (or already while the machine was probed); held until the build ends.
	slot := h.takeSpare(m)
	if slot == nil {
		slot = h.holdRemoteSlot(ctx, m, t, req)
	}
	defer slot.release()

	missing, err := h.lacking(ctx, m, conn, req, inputs)
	if err != nil {
		return &beforeBuildError{Err: err}
	}
	// The machine's signing helper (a Guile start, longer than a tiny build) starts on
	// a second connection as soon as the machine has something small to sign: an item
	// it already has, or else the .drv once it is sent. It then starts while the inputs
	// go up, the slot is taken and the build runs, so that the outputs' export does not
	// wait for it.
	exporter := h.warmExporter(ctx, m, t, notIn(append([]string{req.Drv}, inputs...), missing), req.Drv)
	defer exporter.close()
	if err := h.sendInputs(ctx, m, t, conn, req, missing); err != nil {
		return &beforeBuildError{Err: err}
	}
	exporter.drvSent()
	if err := slot.wait(ctx, h, m, req.Drv); err != nil {
		return &beforeBuildError{Err: err}
	}

	if err := h.buildOnDaemon(ctx, m, conn, req); err != nil {
		return err
	}
	// The slot is free for others while the outputs come back; its session ends
	// meanwhile.
	slot.letGo()
	if len(outputs) > 0 {
		if err := h.fetchOutputs(ctx, m, exporter.conn(conn), outputs); err != nil {
			return err
		}
	}
	slot.release()
	h.learned.peakBytes = slot.peakBytes()
	h.learn(m, req, h.learned, time.Since(began))
	if len(outputs) == 0 {
		return nil
	}
	h.say("done with offloaded '%s'", req.Drv)
	return nil
}

// daemonOptions are the settings of our connections to a machine's daemon: the
// daemon's own time limits (the remote daemon enforces them per build), no messages but
// the build's log, and no offloading again from there (this machine was chosen).
func (h *Hook) daemonOptions(substitutes bool) workerproto.Options {
	o := workerproto.Options{
		KeepGoing:       substitutes,
		Verbosity:       0,
		BuildVerbosity:  0,
		PrintBuildTrace: h.Conf.PrintBuildTrace,
		UseSubstitutes:  substitutes,
	}
	o.Overrides = append(o.Overrides,
		workerproto.Pair{Name: "build-max-silent-time", Value: strconv.Itoa(max(h.Conf.MaxSilentTime, 0))},
		workerproto.Pair{Name: "build-timeout", Value: strconv.Itoa(max(h.Conf.BuildTimeout, 0))},
	)
	return o
}

// lacking asks the machine, in one query, which of the .drv and its inputs it lacks, and
// protects those it has from its garbage collector for as long as the connection lives.
// With OFFLOAD_SUBSTITUTES for m, the machine first fetches what it can itself.
func (h *Hook) lacking(ctx context.Context, m *machines.Machine, conn *workerproto.Conn, req Request, inputs []string) ([]string, error) {
	want := uniqueSorted(append([]string{req.Drv}, inputs...))
	start := time.Now()
	missing, err := missingOn(ctx, conn, want)
	h.rtt = time.Since(start)
	if err != nil {
		return nil, fmt.Errorf("asking which inputs it lacks: %w", err)
	}
	if subs := substituteCandidates(missing, req.Drv); h.Conf.Substitutes.For(m) && len(subs) > 0 {
		missing, err = h.substituteOnDaemon(ctx, m, conn, want, missing, subs)
		if err != nil {
			return nil, err
		}
	}
	lacks := map[string]bool{}
	for _, p := range missing {
		lacks[p] = true
	}
	for _, p := range want {
		if lacks[p] {
			continue
		}
		if err := conn.AddTempRoot(ctx, p); err != nil {
			return nil, fmt.Errorf("protecting %s from the machine's garbage collector: %w", p, err)
		}
	}
	if len(missing) == 0 {
		h.note("machine '%s' already has the %d inputs", m.Display(), len(want))
	}
	return missing, nil
}

// missingOn returns the members of want that the daemon does not have, in want's order.
func missingOn(ctx context.Context, conn *workerproto.Conn, want []string) ([]string, error) {
	valid, err := conn.QueryValidPaths(ctx, want)
	if err != nil {
		return nil, err
	}
	has := map[string]bool{}
	for _, p := range valid {
		has[p] = true
	}
	var missing []string
	for _, p := range want {
		if !has[p] {
			missing = append(missing, p)
		}
	}
	return missing, nil
}

// substituteOnDaemon has the machine's daemon fetch subs from its substitute servers (a
// plain store path can only be substituted: BuildPaths of it is a fetch), then asks
// again what it lacks. A failed fetch is no failure: what is still missing is sent.
func (h *Hook) substituteOnDaemon(ctx context.Context, m *machines.Machine, conn *workerproto.Conn, want, missing, subs []string) ([]string, error) {
	if err := conn.SetOptions(ctx, h.daemonOptions(true)); err != nil {
		return nil, fmt.Errorf("setting the substitute options: %w", err)
	}
	if err := conn.BuildPaths(ctx, subs, workerproto.BuildNormal); err != nil {
		var de *workerproto.DaemonError
		if !errors.As(err, &de) {
			return nil, fmt.Errorf("fetching substitutes: %w", err)
		}
		h.note("machine '%s' could not fetch every substitute: %s", m.Display(), de.Message)
	}
	if err := conn.SetOptions(ctx, h.daemonOptions(false)); err != nil {
		return nil, fmt.Errorf("setting the build options: %w", err)
	}
	still, err := missingOn(ctx, conn, want)
	if err != nil {
		return nil, fmt.Errorf("asking which inputs it lacks: %w", err)
	}
	got := notIn(subs, still)
	h.note("machine '%s' substituted %d of %d missing input%s%s", m.Display(), len(got), len(subs), plural(len(subs)), h.sizeNote(got))
	return still, nil
}

// buildOnDaemon builds req.Drv on the machine's daemon with the log relayed to fd 4 as
// it comes, and tells the build's own failure (100) and timeout (101) from the rest.
func (h *Hook) buildOnDaemon(ctx context.Context, m *machines.Machine, conn *workerproto.Conn, req Request) error {
	h.say("offloading '%s' to '%s'...", req.Drv, m.Display())
	h.say("@ build-remote %s %s", req.Drv, m.Display())
	bctx := ctx
	if h.Conf.BuildTimeout > 0 {
		// Stop waiting locally too, so that a hung connection cannot keep us alive.
		var cancel context.CancelFunc
		bctx, cancel = context.WithTimeout(ctx, time.Duration(h.Conf.BuildTimeout)*time.Second+buildMargin)
		defer cancel()
	}
	conn.Log = h.Log
	began := time.Now()
	err := conn.BuildPaths(bctx, []string{req.Drv}, workerproto.BuildNormal)
	conn.Log = nil
	h.learned.buildTime = time.Since(began)
	var de *workerproto.DaemonError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &de) && de.Status == ExitTimedOut:
		return fmt.Errorf("derivation '%s' timed out: %w", req.Drv, ErrTimedOut)
	case errors.As(err, &de) && de.Status == ExitBuildFailed:
		return fmt.Errorf("derivation '%s' failed: %w", req.Drv, ErrBuildFailed)
	case bctx.Err() != nil && ctx.Err() == nil:
		return fmt.Errorf("no result %s after the build timeout: %w", buildMargin, ErrTimedOut)
	}
	return &machineError{Err: fmt.Errorf("building '%s': %w", req.Drv, err)}
}

// notIn returns the members of paths that are not in missing.
func notIn(paths, missing []string) []string {
	var out []string
	for _, p := range paths {
		if !slices.Contains(missing, p) {
			out = append(out, p)
		}
	}
	return out
}

// exporter is the second connection to the machine's daemon, whose signing helper is
// started early (warmExporter) so that it runs by the time the outputs are exported.
type exporter struct {
	done chan struct{}
	sent chan struct{} // closed once the .drv is on the machine
	stop chan struct{} // closed by close
	once sync.Once
	c    *workerproto.Conn
}

// warmSizeLimit bounds the item exported (and thrown away) to start the helper: the
// signature follows the whole nar.
const warmSizeLimit = 256 << 10

// maxWarmCandidates bounds the items the machine has that are looked at for one small
// enough to warm with (one round trip each, on the exporter's connection).
const maxWarmCandidates = 8

// warmExporter opens the exporter and signs the export of a small item the machine
// has, thrown away: the helper starts once per connection, on its first signature. It
// takes the smallest of has (items the machine has) under warmSizeLimit, or else drv
// once drvSent says it is there.
func (h *Hook) warmExporter(ctx context.Context, m *machines.Machine, t sshexec.Target, has []string, drv string) *exporter {
	e := &exporter{done: make(chan struct{}), sent: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(e.done)
		c, _, err := DialMachineDaemon(ctx, h.Runner, t, daemonSocket(m))
		if err != nil || c == nil {
			return
		}
		c.Trace = h.traceOp(m)
		if c.SetOptions(ctx, h.daemonOptions(false)) != nil {
			c.Close()
			return
		}
		p := ""
		if slices.Contains(has, drv) {
			p = drv
		} else {
			best := int64(warmSizeLimit)
			for _, q := range has[:min(len(has), maxWarmCandidates)] {
				if info, err := c.QueryPathInfo(ctx, q); err == nil && int64(info.NarSize) <= best {
					p, best = q, int64(info.NarSize)
				}
			}
		}
		if p == "" {
			select {
			case <-e.sent:
				p = drv
			case <-e.stop:
				c.Close()
				return
			case <-ctx.Done():
				c.Close()
				return
			}
		}
		if c.ExportPath(ctx, p, true, io.Discard) != nil {
			c.Close()
			return
		}
		e.c = c
	}()
	return e
}

// drvSent says that the .drv is on the machine.
func (e *exporter) drvSent() { e.once.Do(func() { close(e.sent) }) }

// conn returns the warmed connection, or fallback when warming failed.
func (e *exporter) conn(fallback *workerproto.Conn) *workerproto.Conn {
	<-e.done
	if e.c != nil {
		return e.c
	}
	return fallback
}

// close closes the exporter; it does not wait for a .drv that was never sent.
func (e *exporter) close() {
	close(e.stop)
	<-e.done
	if e.c != nil {
		e.c.Close()
	}
}

// topoOrder orders paths so that each comes after those of its references that are
// among paths (the order an export bundle needs), keeping the given order otherwise.
func topoOrder(paths []string, refs func(string) []string) []string {
	in := map[string]bool{}
	for _, p := range paths {
		in[p] = true
	}
	done := map[string]bool{}
	var out []string
	var visit func(p string, depth int)
	visit = func(p string, depth int) {
		if done[p] || depth > len(paths) {
			return
		}
		done[p] = true
		rs := slices.Clone(refs(p))
		slices.Sort(rs)
		for _, r := range rs {
			if in[r] && r != p {
				visit(r, depth+1)
			}
		}
		out = append(out, p)
	}
	for _, p := range paths {
		visit(p, 0)
	}
	return out
}
