package hook

import (
	"context"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"offload/machines"
	"offload/placement"
	"offload/sshexec"
	"offload/storeio"
	"offload/workerproto"
)

// sendInputs puts what the machine lacks into its store: first the items that need a
// signed bundle (the daemon checks every import against its ACL), then the text items
// (text_items.go: the .drv files and the files Guix wrote as text, such as builder
// scripts), each with AddTextToStore, which needs no signature and no Guile on either
// side, in an order where every reference is valid before it is used.
//
// Small bundles go through the daemon connection (ImportPaths pulls 32 KiB per round
// trip); bulk ones through the machine's own `guix archive --import`, fed by one
// streamed, compressed ssh session that pays no round trip per block (bulkUpload).
// Only bulk transfers take the machine's upload lock: tiny uploads do not queue behind
// each other.
func (h *Hook) sendInputs(ctx context.Context, m *machines.Machine, t sshexec.Target, conn *workerproto.Conn, req Request, missing []string) error {
	texts, sources, items, err := h.splitTextItems(ctx, missing)
	if err != nil {
		return err
	}
	byAdd := sync.OnceValue(func() bool { return h.bigSourceByAdd(m) }) // read once, if needed
	for _, src := range sources {
		if src.size > h.bulkThreshold() && !byAdd() {
			items = append(items, src.path)
			continue
		}
		if err := h.sendSource(ctx, m, conn, src); err != nil {
			return err
		}
	}
	if len(items) > 0 {
		if err := h.sendItems(ctx, m, t, conn, req, items); err != nil {
			return err
		}
	}
	return h.addTexts(ctx, conn, texts)
}

// sendItems sends the plain store items, as one signed bundle.
func (h *Hook) sendItems(ctx context.Context, m *machines.Machine, t sshexec.Target, conn *workerproto.Conn, req Request, items []string) error {
	exp, err := h.localExporter(ctx, items)
	if err != nil {
		return err
	}
	defer exp.close()
	n := len(items)
	start := time.Now()
	if exp.size > h.bulkThreshold() {
		lock, err := h.machineLock(ctx, m, "upload", "sending inputs of "+req.Drv)
		if err != nil {
			return err
		}
		defer lock.Release()
		// Another hook may have sent some of them while we waited for the lock.
		if still, err := missingOn(ctx, conn, items); err == nil && len(still) < len(items) {
			if len(still) == 0 {
				return nil
			}
			exp.close()
			if exp, err = h.localExporter(ctx, still); err != nil {
				return err
			}
			items, n = still, len(still)
		}
		return h.bulkUpload(ctx, m, t, exp, n, start)
	}
	h.note("sending %d store item%s (%s) to '%s'...", n, plural(n), mib(exp.size), m.Display())
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(exp.write(ctx, pw)) }()
	cr := &countingReader{r: pr}
	_, err = conn.ImportPaths(ctx, cr)
	pr.CloseWithError(io.ErrClosedPipe) // stops the writer if the daemon stopped reading
	if err != nil {
		if exp.failed() != nil {
			return &localError{Err: exp.failed()}
		}
		return fmt.Errorf("sending %d store item%s: %w", n, plural(n), err)
	}
	h.learned.sentRaw += cr.n.Load()
	h.learned.sendTime += time.Since(start)
	h.note("sent %d store item%s (%s) to '%s' in %.1fs", n, plural(n), mib(cr.n.Load()), m.Display(), time.Since(start).Seconds())
	return nil
}

// bigSourceByAdd tells whether a source item as big as a bulk bundle goes to m by
// AddToStore rather than in the bulk bundle. AddToStore sends it uncompressed and has
// the machine's daemon hold the whole nar before writing it, but starts no Guile
// there; the bundle is compressed and streams into the machine's `guix archive
// --import`. On the real bench (loopback, 124 MiB source tree) AddToStore was the
// faster in 5 of 6 rounds, by about 12%; over a slow link, uncompressed loses. So the
// choice is what the big uploads to m took, per byte (placement.History.Streams): a
// way never measured there is tried once, AddToStore only when the round trip says
// the machine is near (localRTT), the bundle otherwise; then the faster.
func (h *Hook) bigSourceByAdd(m *machines.Machine) bool {
	hist, err := placement.Store{Dir: h.Conf.StateDir, Now: h.Now}.Load(m.ID())
	if err != nil {
		return false
	}
	add, imp := hist.StreamRate(placement.StreamAdd), hist.StreamRate(placement.StreamImport)
	switch {
	case add == 0:
		return h.rtt > 0 && h.rtt < localRTT
	case imp == 0:
		return false
	}
	return add > imp
}

// localRTT is the round trip under which a machine counts as near (this host or its
// LAN) for trying an uncompressed upload.
const localRTT = time.Millisecond

// BulkThresholdEnv sets, in bytes, the bundle size above which inputs go by the streamed
// path; unset, it follows the measured round trip (bulkThreshold).
const BulkThresholdEnv = "OFFLOAD_BULK_THRESHOLD"

// parseBulkThreshold reads $OFFLOAD_BULK_THRESHOLD: a positive number of bytes, else 0
// (decide from the round trip).
func parseBulkThreshold(v string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

// sendSource re-creates a source item on the machine with AddToStore, its nar written
// here (storeio) and read by the daemon inline: no signature (so no signing or checking
// helper on either side) and no round trip per 32 KiB.
func (h *Hook) sendSource(ctx context.Context, m *machines.Machine, conn *workerproto.Conn, src sourceItem) error {
	h.note("sending source %s (%s) to '%s'...", path.Base(src.path), mib(src.size), m.Display())
	start := time.Now()
	pr, pw := io.Pipe()
	dumped := make(chan error, 1)
	go func() {
		err := storeio.Dump(pw, src.path)
		pw.CloseWithError(err)
		dumped <- err
	}()
	cr := &countingReader{r: pr}
	got, err := conn.AddToStore(ctx, src.name, cr)
	pr.CloseWithError(io.ErrClosedPipe) // stops the dump if the daemon stopped reading
	dumpErr := <-dumped
	if isClosedPipe(dumpErr) {
		dumpErr = nil
	}
	switch {
	case err != nil && dumpErr != nil:
		return &localError{Err: fmt.Errorf("reading %s: %w", src.path, dumpErr)}
	case err != nil:
		return fmt.Errorf("sending source %s: %w", src.path, err)
	case got != src.path:
		return fmt.Errorf("sending source %s: the machine's daemon stored it as %s", src.path, got)
	}
	h.learned.sentRaw += cr.n.Load()
	h.learned.sendTime += time.Since(start)
	h.learned.streams = append(h.learned.streams, placement.Stream{Method: placement.StreamAdd, Bytes: cr.n.Load(), Send: time.Since(start)})
	h.note("sent source %s (%s) to '%s' in %.1fs", path.Base(src.path), mib(cr.n.Load()), m.Display(), time.Since(start).Seconds())
	return nil
}

// bulkThreshold is the bundle size above which the streamed upload is faster than
// ImportPaths: the round trips ImportPaths pays (one per 32 KiB) cost more than the
// remote Guile start of `guix archive --import` (about 300 ms). The round trip is the
// one measured by the query of what the machine lacks.
func (h *Hook) bulkThreshold() int64 {
	if h.Conf.BulkThreshold > 0 {
		return h.Conf.BulkThreshold
	}
	rtt := h.rtt
	if rtt < 100*time.Microsecond {
		rtt = 100 * time.Microsecond
	}
	const guileStart = 300 * time.Millisecond
	return int64(guileStart/rtt) * 32 << 10
}

// bulkUpload streams the bundle into the machine's `guix archive --import` through one
// ssh session (bulkImportScript): the machine says which decompressors it has, we say
// which compression follows, then the bundle flows, compressed as the mode and the
// machine allow.
func (h *Hook) bulkUpload(ctx context.Context, m *machines.Machine, t sshexec.Target, exp *localExport, n int, start time.Time) error {
	mode, err := ParseCompressionMode(h.Conf.Compression)
	if err != nil {
		h.note("%v; using %s", err, mode)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	tail := sshexec.NewTail(16 << 10)
	done := make(chan error, 1)
	go func() {
		err := h.Runner.RunRemote(ctx, t, []string{"sh", "-c", bulkImportScript}, sshexec.Stdio{Stdin: inR, Stdout: outW, Stderr: tail})
		outW.CloseWithError(io.EOF)
		inR.CloseWithError(io.ErrClosedPipe)
		done <- err
	}()
	// ended waits for the session once, however many paths ask.
	var runErr error
	ran := false
	ended := func() error {
		if !ran {
			runErr, ran = <-done, true
		}
		return runErr
	}
	failed := func(err error) error {
		inW.CloseWithError(io.ErrClosedPipe)
		if runErr := ended(); runErr != nil {
			err = runErr
		}
		if t := sshexec.LastLines(tail.String(), 3); t != "" {
			return fmt.Errorf("sending %d store item%s: %w: %s", n, plural(n), err, t)
		}
		return fmt.Errorf("sending %d store item%s: %w", n, plural(n), err)
	}
	first, err := readShortLine(outR)
	if err != nil {
		return failed(err)
	}
	has := map[string]bool{}
	for _, c := range strings.Fields(strings.TrimPrefix(first, toolPrefix)) {
		has[c] = true
	}
	comp, note := ChooseCompression(mode, has)
	if note != "" {
		h.note("machine '%s': %s", m.Display(), note)
	}
	h.note("sending %d store item%s (%s) to '%s' (%s)...", n, plural(n), mib(exp.size), m.Display(), comp)
	sent := &countingWriter{w: inW}
	werr := make(chan error, 1)
	go func() {
		err := func() error {
			if _, err := io.WriteString(sent, string(comp)+"\n"); err != nil {
				return err
			}
			zw, err := newCompressor(comp, sent)
			if err != nil {
				return err
			}
			var w io.Writer = sent
			if zw != nil {
				w = zw
			}
			if err := exp.write(ctx, w); err != nil {
				return err
			}
			if zw != nil {
				return zw.Close()
			}
			return nil
		}()
		inW.CloseWithError(err)
		werr <- err
	}()
	stop := make(chan struct{})
	go h.reportProgress("sending to '"+m.Display()+"'", &sent.n, stop)
	go io.Copy(io.Discard, outR)
	ended()
	close(stop)
	<-werr
	if exp.failed() != nil {
		return &localError{Err: exp.failed()}
	}
	if runErr != nil {
		return failed(runErr)
	}
	h.learned.sentRaw += exp.written.Load()
	h.learned.sendTime += time.Since(start)
	h.learned.streams = append(h.learned.streams, placement.Stream{Method: placement.StreamImport, Bytes: exp.written.Load(), Send: time.Since(start)})
	h.note("sent %d store item%s (%s) to '%s' in %.1fs", n, plural(n), comp.describe(sent.n.Load(), exp.written.Load()), m.Display(), time.Since(start).Seconds())
	return nil
}

// readShortLine reads one line of at most 256 bytes, byte by byte (nothing after it is
// consumed).
func readShortLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 256 {
		if _, err := io.ReadFull(r, one); err != nil {
			return "", err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return "", fmt.Errorf("a line of more than 256 bytes where the import script says which decompressors it has")
}
