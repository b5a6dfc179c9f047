package hook

import (
	"context"
	"fmt"
	"io"
	"offload/machines"
	"offload/storeio"
	"path"
	"strings"
	"time"
)

// download restores the outputs that follow the build on the session's stdout into the
// local store, checking each item's signature against the local ACL (the daemon holds
// the output locks, so `guix archive --import` would deadlock: PROTOCOL.md). The
// machine's export waits in its pipe until we hold the download lock.
func (s *session) download(ctx context.Context) error {
	h, m, outputs := s.h, s.m, s.outputs
	lock, err := h.machineLock(ctx, m, "download", "retrieving "+strings.Join(outputs, " "))
	if err != nil {
		return err
	}
	defer lock.Release()

	acl, err := h.prepareRestore()
	if err != nil {
		return err
	}
	comp := s.comp
	h.say("retrieving %d store item%s from '%s' (%s)...", len(outputs), plural(len(outputs)), m.Display(), comp)
	start := time.Now()
	cr := &countingReader{r: endStatus{s}}
	stop := make(chan struct{})
	go h.reportProgress("retrieving from '"+m.Display()+"'", &cr.n, stop)
	// ImportBundle reads to the end of the stream before it places anything: for a
	// compressed stream, through the decompressor's own checksum, and in any case to
	// the end of the session's stdout, which comes after the machine's exit status.
	var bundle io.Reader = cr
	if comp.streamed() {
		dec := newDecompressor(comp, cr)
		defer dec.Close()
		bundle = dec
	}
	raw := &countingReader{r: bundle}
	items, impErr := h.restoreOutputs(raw, acl, outputs)
	close(stop)
	machineFirst := s.ended() // the machine's export ended before the import failed
	if impErr != nil {
		s.abort() // stop the machine's export: we refuse what it sends
	}
	runErr := s.wait()
	exportFailed := func() error {
		return &machineError{Err: s.failure("`guix archive --export`", "retrieving outputs", s.stderr.tails[2])}
	}
	if runErr != nil && impErr != nil && machineFirst {
		return exportFailed()
	}
	if impErr != nil && storeio.IsRefusal(impErr) {
		return fmt.Errorf("refusing what it returned: %w", impErr)
	}
	if impErr != nil && runErr != nil {
		return exportFailed() // the stream was cut: the session's end says why
	}
	if impErr != nil {
		return fmt.Errorf("restoring the outputs into %s: %w", h.Conf.StoreDir, impErr)
	}
	if runErr != nil {
		return exportFailed()
	}
	if err := allReturned(m, outputs, items); err != nil {
		return err
	}
	h.note("retrieved %d store item%s (%s) from '%s' in %.1fs", len(items), plural(len(items)), comp.describe(cr.n.Load(), raw.n.Load()), m.Display(), time.Since(start).Seconds())
	return nil
}

// endStatus reads the rest of the session's stdout and ends it with the session's
// error, if any, rather than a plain end of file: the import refuses a stream whose
// export failed on the machine, however complete it looks.
type endStatus struct{ s *session }

func (e endStatus) Read(p []byte) (int, error) {
	n, err := e.s.stdout.Read(p)
	if err == io.EOF {
		// Our copy of ssh's stdout closes only after RunRemote returned.
		if runErr := e.s.wait(); runErr != nil {
			err = runErr
		}
	}
	return n, err
}

// allReturned checks that every output the daemon asked for came back: a machine that
// returns some of them must not get an exit 0 (the daemon would then fail with "failed
// to produce output path", or register a partial result).
func allReturned(m *machines.Machine, outputs []string, items []storeio.ItemInfo) error {
	got := map[string]bool{}
	for _, it := range items {
		got[it.Path] = true
	}
	for _, o := range outputs {
		if !got[o] {
			return fmt.Errorf("it did not return output %s", o)
		}
	}
	return nil
}

// cleanStaleTemps removes the leftovers of hooks the daemon killed mid-import (it
// uses SIGKILL).
func (h *Hook) cleanStaleTemps() {
	if removed, err := storeio.CleanStaleTemps(h.Conf.StoreDir); err == nil && len(removed) > 0 {
		h.note("removed %d stale temporary director%s from %s", len(removed), map[bool]string{true: "y", false: "ies"}[len(removed) == 1], h.Conf.StoreDir)
	}
}

// prepareRestore removes what killed hooks left in the store and reads the ACL that
// what a machine returns is checked against.
func (h *Hook) prepareRestore() (*storeio.ACL, error) {
	h.cleanStaleTemps()
	acl, err := storeio.LoadACL(path.Join(h.Conf.ConfDir, "acl"))
	if err != nil {
		return nil, fmt.Errorf("cannot check what it returns: %w", err)
	}
	return acl, nil
}

// restoreOutputs restores the bundle in r into the store, all or nothing: only the
// outputs asked for, each signed by a key of acl over the right hash (both paths).
func (h *Hook) restoreOutputs(r io.Reader, acl *storeio.ACL, outputs []string) ([]storeio.ItemInfo, error) {
	return storeio.ImportBundle(r, storeio.ImportOptions{
		StoreDir: h.Conf.StoreDir,
		Allowed:  outputs,
		ACL:      acl,
		Log:      h.Out,
		Replace:  true, // the daemon asked for them: whatever is there is not valid
	})
}
