package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"offload/sshexec"
	"offload/storeio"
	"offload/workerproto"
)

// localExport is a signed export bundle of local store items, made without a Guile
// start when it can be: the nar written by storeio, the references and deriver from the
// local daemon (QueryPathInfo), the signature made here with the host's key, which is
// read once into memory and never leaves it. Where the key cannot be read (the hook
// does not run as the daemon's user), the local daemon signs (its helper is one Guile
// start per connection); where no local daemon answers, the local `guix archive
// --export` does it all, as on the shell path.
type localExport struct {
	h       *Hook
	paths   []string // references first
	infos   map[string]workerproto.PathInfo
	daemon  *workerproto.Conn
	key     *storeio.SecretKey
	size    int64        // the nars' total size
	written atomic.Int64 // bundle bytes written so far

	mu  sync.Mutex
	err error
}

// localExporter prepares the export of items (in any order).
func (h *Hook) localExporter(ctx context.Context, items []string) (*localExport, error) {
	e := &localExport{h: h, paths: items}
	daemon := h.localDaemon(ctx)
	if daemon != nil {
		e.infos = map[string]workerproto.PathInfo{}
		for _, p := range items {
			info, err := h.localInfo(ctx, daemon, p)
			if err != nil {
				return nil, &localError{Err: fmt.Errorf("local guix-daemon: %w", err)}
			}
			e.infos[p] = info
			e.size += int64(info.NarSize)
		}
		e.paths = topoOrder(items, func(p string) []string { return e.infos[p].References })
		e.daemon = daemon
		e.key = h.hostKey()
		return e, nil
	}
	// Only the size's order matters (bulk or not): an item guix can export and we cannot
	// measure (a store kept elsewhere) counts as nothing.
	for _, p := range items {
		if n, err := storeio.NarSize(p); err == nil {
			e.size += n
		}
	}
	if h.Conf.Guix == "" {
		return nil, &localError{Err: fmt.Errorf("no local guix-daemon at %s and no guix to export with: %v", h.Conf.LocalDaemon, h.Conf.GuixErr)}
	}
	return e, nil
}

// write writes the whole bundle to w.
func (e *localExport) write(ctx context.Context, w io.Writer) error {
	cw := &countingWriter{w: w}
	defer func() { e.written.Store(cw.n.Load()) }()
	var err error
	switch {
	case e.key != nil:
		bw := storeio.NewBundleWriter(cw, e.key)
		for _, p := range e.paths {
			info := e.infos[p]
			if err = bw.Add(p, storeio.ItemInfo{Path: p, References: info.References, Deriver: info.Deriver}); err != nil {
				break
			}
		}
		if err == nil {
			err = bw.Close()
		}
	case e.daemon != nil:
		err = e.daemon.ExportItems(ctx, e.paths, true, cw)
		if err != nil {
			err = fmt.Errorf("local guix-daemon: %w", err)
		}
	default:
		argv := append([]string{e.h.Conf.Guix, "archive", "--export"}, e.paths...)
		err = e.h.Runner.Run(ctx, argv, sshexec.Stdio{Stdout: cw})
		if err != nil {
			err = fmt.Errorf("local `guix archive --export`: %w", err)
		}
	}
	if err != nil && ctx.Err() == nil && !isClosedPipe(err) {
		e.mu.Lock()
		e.err = err
		e.mu.Unlock()
	}
	return err
}

// failed is the export's own failure, if any (not one caused by the reader going away).
func (e *localExport) failed() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

func (e *localExport) close() {}

// isClosedPipe tells a write that failed because the reader went away.
func isClosedPipe(err error) bool {
	return err != nil && errors.Is(err, io.ErrClosedPipe)
}

// localDaemon returns a connection to the local guix-daemon (Config.LocalDaemon), opened
// once per hook process; nil when none answers.
func (h *Hook) localDaemon(ctx context.Context) *workerproto.Conn {
	h.localOnce.Do(func() {
		if h.Conf.LocalDaemon == "" {
			return
		}
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := workerproto.Dial(dctx, h.Conf.LocalDaemon)
		if err != nil {
			h.localWhy = err
			return
		}
		h.local = c
	})
	return h.local
}

// localInfo is p's record in the local daemon, asked once per hook: placement, the
// split of the inputs and their export all read it.
func (h *Hook) localInfo(ctx context.Context, daemon *workerproto.Conn, p string) (workerproto.PathInfo, error) {
	h.infoMu.Lock()
	defer h.infoMu.Unlock()
	if info, ok := h.infos[p]; ok {
		return info, nil
	}
	info, err := daemon.QueryPathInfo(ctx, p)
	if err != nil {
		return info, err
	}
	if h.infos == nil {
		h.infos = map[string]workerproto.PathInfo{}
	}
	h.infos[p] = info
	return info, nil
}

// hostKey returns this host's signing key, read once; nil when this process may not
// read it (the local daemon signs then).
func (h *Hook) hostKey() *storeio.SecretKey {
	h.keyOnce.Do(func() {
		k, err := storeio.LoadSecretKey(filepath.Join(h.Conf.ConfDir, "signing-key.sec"))
		if err == nil {
			h.key = k
		}
	})
	return h.key
}
