package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"offload/machines"
	"offload/storeio"
	"offload/workerproto"
)

// fetchOutputs exports the outputs from the machine's daemon, signed, straight into the
// all-or-nothing restore, which checks each item's signature against the local ACL and
// places nothing unless the whole stream checks (the daemon holds the outputs' locks, so
// they cannot go through it: PROTOCOL.md). A daemon error mid-stream (it reports a hash
// mismatch only after the data went out) aborts the restore. Only a bulk download
// takes the machine's download lock.
func (h *Hook) fetchOutputs(ctx context.Context, m *machines.Machine, conn *workerproto.Conn, outputs []string) error {
	infos := map[string]workerproto.PathInfo{}
	var size int64
	for _, o := range outputs {
		info, err := conn.QueryPathInfo(ctx, o)
		if err != nil {
			return &machineError{Err: fmt.Errorf("output %s: %w", o, err)}
		}
		infos[o] = info
		size += int64(info.NarSize)
	}
	if size > h.bulkThreshold() {
		lock, err := h.machineLock(ctx, m, "download", "retrieving outputs")
		if err != nil {
			return err
		}
		defer lock.Release()
	}
	acl, err := h.prepareRestore()
	if err != nil {
		return err
	}
	ordered := topoOrder(outputs, func(p string) []string { return infos[p].References })
	h.say("retrieving %d store item%s from '%s'...", len(outputs), plural(len(outputs)), m.Display())
	start := time.Now()
	pr, pw := io.Pipe()
	cr := &countingReader{r: pr}
	exportErr := make(chan error, 1)
	go func() {
		err := conn.ExportItems(ctx, ordered, true, pw)
		pw.CloseWithError(err) // nil: a plain end of stream
		exportErr <- err
	}()
	stop := make(chan struct{})
	go h.reportProgress("retrieving from '"+m.Display()+"'", &cr.n, stop)
	items, impErr := h.restoreOutputs(cr, acl, outputs)
	close(stop)
	// Unblock the export if the restore stopped reading (it refused the stream), and
	// stop the daemon's side of it.
	pr.CloseWithError(io.ErrClosedPipe)
	if impErr != nil {
		conn.Close()
	}
	expErr := <-exportErr
	// The export failed first when the restore saw its error through the pipe; when the
	// restore failed first (a refusal, or this host's disk), we closed the connection.
	exportFirst := expErr != nil && (impErr == nil || errors.Is(impErr, expErr))
	switch {
	case impErr != nil && storeio.IsRefusal(impErr):
		return fmt.Errorf("refusing what it returned: %w", impErr)
	case exportFirst && !errors.Is(expErr, io.ErrClosedPipe):
		return &machineError{Err: fmt.Errorf("retrieving outputs: %w", expErr)}
	case impErr != nil && !exportFirst:
		return &localError{Err: fmt.Errorf("restoring the outputs into %s: %w", h.Conf.StoreDir, impErr)}
	case impErr != nil:
		return fmt.Errorf("restoring the outputs into %s: %w", h.Conf.StoreDir, impErr)
	}
	if err := allReturned(m, outputs, items); err != nil {
		return err
	}
	h.note("retrieved %d store item%s (%s) from '%s' in %.1fs", len(items), plural(len(items)), mib(cr.n.Load()), m.Display(), time.Since(start).Seconds())
	return nil
}
