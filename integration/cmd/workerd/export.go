package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"offload/integration/subst"
	"offload/storeio"
)

// agent stands for the `guix authenticate` process the real worker starts on its first
// signature or signature check and keeps for the connection's life (§4.7): it costs
// one Guile start, and it reads the ACL once, when it starts.
type agent struct {
	key    *storeio.SecretKey
	keyErr error
	acl    *storeio.ACL
	aclErr error
}

func (w *worker) startAgent() *agent {
	if w.agent != nil {
		return w.agent
	}
	w.d.costs.sleep(w.d.costs.agent)
	a := &agent{}
	a.key, a.keyErr = storeio.LoadSecretKey(filepath.Join(w.d.conf, "signing-key.sec"))
	a.acl, a.aclErr = subst.LoadACL(w.d.conf)
	w.agent = a
	return a
}

// chunkWriter sends what is written to it as STDERR_WRITE chunks of at most 64 KiB, as
// the daemon's TunnelSink does. With limit > 0, it closes the connection once that
// many bytes went out (a hostile mode).
type chunkWriter struct {
	w     *worker
	ctx   context.Context
	buf   []byte
	sent  int64
	limit int64
}

const maxChunk = 65536

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(maxChunk-len(c.buf), len(p))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == maxChunk {
			if err := c.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (c *chunkWriter) flush() error {
	if c.ctx.Err() != nil {
		return errClosed // the client left, or broke the protocol: stop sending
	}
	if len(c.buf) == 0 {
		return nil
	}
	chunk := c.buf
	closeAfter := false
	if c.limit > 0 && c.sent+int64(len(chunk)) >= c.limit {
		chunk, closeAfter = chunk[:c.limit-c.sent], true
	}
	c.w.outMu.Lock()
	c.w.wr.int(stderrWrite)
	c.w.wr.str(string(chunk))
	err := c.w.out.Flush()
	c.w.outMu.Unlock()
	c.sent += int64(len(chunk))
	c.buf = c.buf[:0]
	if err != nil || closeAfter {
		return errClosed
	}
	return nil
}

// opExportPath is §4.5: one export item (nar, magic, path, references, deriver,
// signature), no leading 1 and no trailing 0, as STDERR_WRITE chunks; then int 1.
func opExportPath(w *worker, ctx context.Context) (func(writer), error) {
	p, err := w.storePath()
	if err != nil {
		return nil, err
	}
	sign, err := w.in.int()
	if err != nil {
		return nil, err
	}
	w.startWork(true)
	w.info("exporting path `%s'\n", p)
	info, err := w.pathInfo(p)
	if err != nil {
		return nil, err
	}
	real, _ := w.d.store.Real(p)
	cw := &chunkWriter{w: w, ctx: ctx, buf: make([]byte, 0, maxChunk)}
	switch mode, args := w.d.hostile(); mode {
	case "hold-export":
		if len(args) > 0 && !strings.HasSuffix(p, ".drv") {
			if err := holdUntil(ctx, args[0]); err != nil {
				return nil, err
			}
		}
	case "close-mid-export":
		size, err := storeio.NarSize(real)
		if err != nil {
			return nil, errorf("%v", err)
		}
		cw.limit = max(size/2, 1)
	case "bad-export-hash":
		return nil, w.exportChanged(cw, p, real)
	}
	h := sha256.New()
	out := io.MultiWriter(h, cw)
	if err := storeio.Dump(out, real); err != nil {
		if errors.Is(err, errClosed) {
			return nil, errClosed
		}
		return nil, errorf("%v", err)
	}
	var trailer bytes.Buffer
	tw := writer{bufio.NewWriter(&trailer)}
	tw.int(exportMagic)
	tw.str(p)
	tw.strs(info.References)
	tw.str(info.Deriver)
	tw.w.Flush()
	out.Write(trailer.Bytes())
	var sig bytes.Buffer
	sw := writer{bufio.NewWriter(&sig)}
	if mode, _ := w.d.hostile(); mode == "unsigned" {
		sign = 0 // a daemon whose exports come back unsigned, whatever was asked
	}
	if sign == 1 {
		a := w.startAgent()
		if a.keyErr != nil {
			return nil, errorf("cannot read signing key: %v", a.keyErr)
		}
		var hash [32]byte
		h.Sum(hash[:0])
		s, err := a.key.Sign(hash)
		if err != nil {
			return nil, errorf("signing %s: %v", p, err)
		}
		sw.int(1)
		sw.str(string(s))
	} else {
		sw.int(0)
	}
	sw.w.Flush()
	cw.Write(sig.Bytes())
	if err := cw.flush(); err != nil {
		return nil, err
	}
	return func(wr writer) { wr.int(1) }, nil
}

// exportChanged sends p's nar with one content byte changed, then fails as the real
// daemon does when the bytes it sent do not hash to the registered hash.
func (w *worker) exportChanged(cw *chunkWriter, p, real string) error {
	var nar bytes.Buffer
	if err := storeio.Dump(&nar, real); err != nil {
		return errorf("%v", err)
	}
	was := sha256.Sum256(nar.Bytes())
	b := nar.Bytes()
	b[contentByte(b)] ^= 0x20
	now := sha256.Sum256(b)
	if _, err := cw.Write(b); err != nil {
		return err
	}
	if err := cw.flush(); err != nil {
		return err
	}
	return errorf("hash of path `%s' has changed from `%s' to `%s'!", p, hex.EncodeToString(was[:]), hex.EncodeToString(now[:]))
}

// contentByte returns the offset of the first byte of the first non-empty file
// contents in nar (or of the magic's first letter when there is none).
func contentByte(nar []byte) int {
	tok := make([]byte, 16)
	binary.LittleEndian.PutUint64(tok, 8)
	copy(tok[8:], "contents")
	off := 0
	for {
		i := bytes.Index(nar[off:], tok)
		if i < 0 {
			return 8
		}
		at := off + i + 16
		if at+8 < len(nar) && binary.LittleEndian.Uint64(nar[at:]) > 0 {
			return at + 8
		}
		off = at
	}
}

// holdUntil creates gate+".waiting" and waits until gate exists (hold-export).
func holdUntil(ctx context.Context, gate string) error {
	if err := os.WriteFile(gate+".waiting", nil, 0o644); err != nil {
		return errorf("%v", err)
	}
	for {
		if _, err := os.Stat(gate); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
}
