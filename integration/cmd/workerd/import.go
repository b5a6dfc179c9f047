package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"offload/integration/drv"
	"offload/storeio"
)

// readRequest is the size STDERR_READ asks for (the daemon's BufferedSource default).
const readRequest = 32768

// pullReader pulls the client's data with STDERR_READ, one request per 32 KiB at
// most, never more than it needs: it is read with exact reads only.
type pullReader struct {
	w        *worker
	buf      []byte
	pulls    int
	closeMid bool // hostile: close after the first chunk
}

func (p *pullReader) Read(b []byte) (int, error) {
	if len(p.buf) == 0 {
		if p.closeMid && p.pulls > 0 {
			return 0, errClosed
		}
		p.w.outMu.Lock()
		p.w.wr.int(stderrRead)
		p.w.wr.int(readRequest)
		err := p.w.out.Flush()
		p.w.outMu.Unlock()
		if err != nil {
			return 0, errClosed
		}
		p.pulls++
		n, err := p.w.in.int()
		if err != nil {
			return 0, errClosed
		}
		// The real daemon closes the connection after either error.
		if n > readRequest {
			return 0, &opError{msg: "string is too long", status: 1, close: true}
		}
		if n == 0 {
			return 0, &opError{msg: "unexpected end-of-file", status: 1, close: true}
		}
		data := make([]byte, n+pad(n))
		if _, err := io.ReadFull(p.w.in.r, data); err != nil {
			return 0, errClosed
		}
		for _, c := range data[n:] {
			if c != 0 {
				return 0, &opError{msg: "non-zero padding", status: 1, close: true}
			}
		}
		// After each piece the real daemon goes back to work and checks that the
		// client is quiet (startWork's isFarSideClosed): data sent before it was asked
		// for fails the import, so a client cannot stream ahead of the requests.
		if p.w.in.r.Buffered() > 0 {
			return 0, &opError{msg: "EOF expected (protocol error?)", status: 1, close: true}
		}
		p.buf = data[:n]
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}

// exact reads the export stream's framing from the pull reader; when h is set, every
// byte read also goes to it (and to the spool file holding the nar).
type exact struct {
	r   io.Reader
	tee io.Writer
}

func (e *exact) read(n uint64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(e.r, b); err != nil {
		return nil, err
	}
	if e.tee != nil {
		e.tee.Write(b)
	}
	return b, nil
}

func (e *exact) long() (uint64, error) {
	b, err := e.read(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (e *exact) str(max uint64) (string, error) {
	n, err := e.long()
	if err != nil {
		return "", err
	}
	if n > max {
		return "", errorf("string of %d bytes in the archive is too long", n)
	}
	b, err := e.read(n + pad(n))
	if err != nil {
		return "", err
	}
	return string(b[:n]), nil
}

func (e *exact) expect(tok string) error {
	s, err := e.str(64)
	if err != nil {
		return err
	}
	if s != tok {
		return errorf("bad archive: expected `%s', got `%s'", tok, s)
	}
	return nil
}

// copyNar reads one nar, exactly to its end, through e (whose tee keeps it): only its
// extent is found here; storeio.Restore checks it for real when it is unpacked.
func copyNar(e *exact) error {
	if err := e.expect("nix-archive-1"); err != nil {
		return err
	}
	return copyNode(e, 0)
}

func copyNode(e *exact, depth int) error {
	if depth > 256 {
		return errorf("bad archive: too deep")
	}
	if err := e.expect("("); err != nil {
		return err
	}
	if err := e.expect("type"); err != nil {
		return err
	}
	typ, err := e.str(64)
	if err != nil {
		return err
	}
	switch typ {
	case "regular":
		tok, err := e.str(64)
		if err == nil && tok == "executable" {
			if err = e.expect(""); err == nil {
				tok, err = e.str(64)
			}
		}
		if err == nil && tok == "contents" {
			var n uint64
			if n, err = e.long(); err == nil {
				if _, err = io.CopyN(e.tee, e.r, int64(n+pad(n))); err == nil {
					tok, err = e.str(64)
				}
			}
		}
		if err == nil && tok != ")" {
			err = errorf("bad archive: expected `)', got `%s'", tok)
		}
		return err
	case "symlink":
		if err := e.expect("target"); err != nil {
			return err
		}
		if _, err := e.str(4096); err != nil {
			return err
		}
		return e.expect(")")
	case "directory":
		for {
			tok, err := e.str(64)
			if err != nil {
				return err
			}
			if tok == ")" {
				return nil
			}
			if tok != "entry" {
				return errorf("bad archive: expected `entry', got `%s'", tok)
			}
			for _, t := range []string{"(", "name"} {
				if err := e.expect(t); err != nil {
					return err
				}
			}
			if _, err := e.str(4096); err != nil {
				return err
			}
			if err := e.expect("node"); err != nil {
				return err
			}
			if err := copyNode(e, depth+1); err != nil {
				return err
			}
			if err := e.expect(")"); err != nil {
				return err
			}
		}
	}
	return errorf("bad archive: unknown file type `%s'", typ)
}

// opImportPaths is §4.6: it pulls a `guix archive --export` stream item by item; each
// item must be signed by a key of the ACL; items before a failing one stay imported;
// the reply lists the items in stream order, already valid ones too.
func opImportPaths(w *worker, _ context.Context) (func(writer), error) {
	w.startWork(false)
	mode, _ := w.d.hostile()
	src := &pullReader{w: w, closeMid: mode == "close-mid-import"}
	var imported []string
	for {
		e := &exact{r: src, tee: io.Discard}
		marker, err := e.long()
		if err != nil {
			return nil, err
		}
		if marker == 0 {
			break
		}
		if marker != 1 {
			return nil, errorf("input doesn't look like something created by `nix-store --export'")
		}
		p, err := w.importItem(src)
		if err != nil {
			return nil, err
		}
		imported = append(imported, p)
	}
	return func(wr writer) { wr.list(imported) }, nil
}

// importItem reads one item (after its marker) and registers it. The nar is spooled
// to a file first: the real daemon, too, has the whole nar before it looks at the
// signature.
func (w *worker) importItem(src io.Reader) (string, error) {
	spool, err := os.CreateTemp("", "workerd-nar-")
	if err != nil {
		return "", errorf("%v", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	h := sha256.New()
	e := &exact{r: src, tee: io.MultiWriter(h, spool)}
	if err := copyNar(e); err != nil {
		return "", err
	}
	e.tee = h // the trailer is signed, not unpacked
	magic, err := e.long()
	if err != nil {
		return "", err
	}
	if magic != exportMagic {
		return "", errorf("normalized archive cannot be imported; wrong format")
	}
	p, err := e.str(4096)
	if err != nil {
		return "", err
	}
	n, err := e.long()
	if err != nil {
		return "", err
	}
	var refs []string
	for range n {
		r, err := e.str(4096)
		if err != nil {
			return "", err
		}
		refs = append(refs, r)
	}
	deriver, err := e.str(4096)
	if err != nil {
		return "", err
	}
	var signed [32]byte
	h.Sum(signed[:0])
	e.tee = io.Discard
	hasSig, err := e.long()
	if err != nil {
		return "", err
	}
	var sig string
	if hasSig == 1 {
		if sig, err = e.str(1 << 20); err != nil {
			return "", err
		}
	}
	if !w.isStorePath(p) {
		return "", w.notInStore(p)
	}
	if hasSig != 1 {
		return "", errorf("imported archive of `%s' lacks a signature", p)
	}
	a := w.startAgent()
	if a.aclErr != nil {
		return "", errorf("%v", a.aclErr)
	}
	if err := verifyMessage(sig, signed, a.acl); err != nil {
		return "", err
	}
	s := w.d.store
	if err := w.roots.add(p); err != nil {
		return "", errorf("%v", err)
	}
	if s.Valid(p) {
		return p, nil
	}
	if err := s.CheckPath(p); err != nil {
		return "", errorf("%v", err)
	}
	for _, r := range refs {
		if r != p && !s.Valid(r) {
			return "", errorf("path ‘%s’ is not valid", r)
		}
	}
	if deriver != "" && !s.Valid(deriver) {
		deriver = "" // recorded only when that .drv is valid here
	}
	if err := w.install(spool, drv.Info{Path: p, References: refs, Deriver: deriver}); err != nil {
		return "", err
	}
	return p, nil
}

// install unpacks the nar spooled in spool at info.Path and registers it with info.
func (w *worker) install(spool *os.File, info drv.Info) error {
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return errorf("%v", err)
	}
	s := w.d.store
	real, _ := s.Real(info.Path)
	tmp := filepath.Join(s.Physical, fmt.Sprintf(".workerd-tmp-%d-%d", os.Getpid(), w.id))
	removeAll(tmp)
	if err := storeio.Restore(spool, tmp); err != nil {
		return errorf("%v", err)
	}
	// Bytes left at the path by an earlier, unregistered import are replaced.
	if err := removeAll(real); err != nil {
		removeAll(tmp)
		return errorf("%v", err)
	}
	if err := os.Rename(tmp, real); err != nil {
		removeAll(tmp)
		return errorf("%v", err)
	}
	if err := s.Register(info); err != nil {
		return errorf("%v", err)
	}
	return nil
}

// verifyMessage checks sig over hash against acl and words a refusal as the daemon and
// its agent do.
func verifyMessage(sig string, hash [32]byte, acl *storeio.ACL) error {
	key, err := storeio.VerifySignature([]byte(sig), hash, acl)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storeio.ErrInvalidHash):
		return errorf("signed hash doesn't match actual contents of imported archive; archive could be corrupt, or someone is trying to import a Trojan horse")
	case errors.Is(err, storeio.ErrUnauthorizedKey):
		return errorf("unauthorized public key: %s", key.String())
	case errors.Is(err, storeio.ErrInvalidSignature):
		return errorf("invalid signature: %s", strings.TrimSpace(sig))
	}
	return errorf("%v", err)
}

// removeAll removes a tree whose directories Restore made read-only.
func removeAll(path string) error {
	filepath.Walk(path, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(path)
}
