package workerproto

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Operation numbers (the first int of a request).
const (
	opIsValidPath     = 1
	opQueryReferences = 5
	opAddToStore      = 7
	opAddTextToStore  = 8
	opBuildPaths      = 9
	opAddTempRoot     = 11
	opExportPath      = 16
	opQueryDeriver    = 18
	opSetOptions      = 19
	opQueryPathInfo   = 26
	opImportPaths     = 27
	opQueryValidPaths = 31
)

// BuildMode is BuildPaths' mode.
type BuildMode int

const (
	BuildNormal BuildMode = 0
	BuildRepair BuildMode = 1 // refused by the daemon unless the client is root
	BuildCheck  BuildMode = 2
)

// PathInfo is what the daemon knows about a valid store item.
type PathInfo struct {
	Deriver          string // "" when unknown
	NarHash          string // SHA-256 of the nar, 64 lowercase hex digits
	References       []string
	RegistrationTime time.Time
	NarSize          uint64
}

// request writes an operation's opcode and arguments, flushes, and reads the STDERR
// codes up to LAST.
func (c *Conn) request(t *transfer, op uint32, args func() error) error {
	err := WriteInt(c.w, op)
	if err == nil && args != nil {
		err = args()
	}
	if err := c.flushed(err); err != nil {
		return err
	}
	return c.stderr(t)
}

// okReply reads the int 1 that several operations answer.
func (c *Conn) okReply() error {
	v, err := ReadInt(c.r)
	if err != nil {
		return noEOF(err)
	}
	if v != 1 {
		return fmt.Errorf("%w: reply %d instead of 1", ErrProtocol, v)
	}
	return nil
}

func strArg(c *Conn, s string) func() error {
	return func() error { return WriteStr(c.w, []byte(s)) }
}

// IsValidPath tells whether p is a valid store item. A path outside the store is a
// DaemonError (the connection survives it).
func (c *Conn) IsValidPath(ctx context.Context, p string) (valid bool, err error) {
	err = c.call(ctx, "is-valid-path", 1, func(*stats) error {
		if err := c.request(nil, opIsValidPath, strArg(c, p)); err != nil {
			return err
		}
		valid, err = ReadBool(c.r)
		return noEOF(err)
	})
	return valid, err
}

// QueryValidPaths returns the valid members of ps, sorted, in one round trip. A member
// outside the store makes the daemon close the connection after its error.
func (c *Conn) QueryValidPaths(ctx context.Context, ps []string) (valid []string, err error) {
	err = c.call(ctx, "query-valid-paths", len(ps), func(*stats) error {
		if err := c.request(nil, opQueryValidPaths, func() error { return WriteStrs(c.w, ps) }); err != nil {
			return err
		}
		valid, err = ReadStrs(c.r)
		return noEOF(err)
	})
	return valid, err
}

// QueryPathInfo returns what the daemon registered for the valid item p. An invalid p
// is a DaemonError; a path outside the store closes the connection after the error.
func (c *Conn) QueryPathInfo(ctx context.Context, p string) (info PathInfo, err error) {
	err = c.call(ctx, "query-path-info", 1, func(*stats) error {
		if err := c.request(nil, opQueryPathInfo, strArg(c, p)); err != nil {
			return err
		}
		return noEOF(c.readPathInfo(&info))
	})
	return info, err
}

func (c *Conn) readPathInfo(info *PathInfo) error {
	deriver, err := ReadStr(c.r)
	if err != nil {
		return err
	}
	hash, err := ReadStr(c.r)
	if err != nil {
		return err
	}
	refs, err := ReadStrs(c.r)
	if err != nil {
		return err
	}
	t, err := ReadInt(c.r)
	if err != nil {
		return err
	}
	size, err := ReadLong(c.r)
	if err != nil {
		return err
	}
	*info = PathInfo{Deriver: string(deriver), NarHash: string(hash), References: refs,
		RegistrationTime: time.Unix(int64(t), 0), NarSize: size}
	return nil
}

// QueryReferences returns the references of the valid item p, sorted.
func (c *Conn) QueryReferences(ctx context.Context, p string) (refs []string, err error) {
	err = c.call(ctx, "query-references", 1, func(*stats) error {
		if err := c.request(nil, opQueryReferences, strArg(c, p)); err != nil {
			return err
		}
		refs, err = ReadStrs(c.r)
		return noEOF(err)
	})
	return refs, err
}

// QueryDeriver returns the .drv that built p, or "" when the daemon does not know it.
func (c *Conn) QueryDeriver(ctx context.Context, p string) (drv string, err error) {
	err = c.call(ctx, "query-deriver", 1, func(*stats) error {
		if err := c.request(nil, opQueryDeriver, strArg(c, p)); err != nil {
			return err
		}
		b, err := ReadStr(c.r)
		drv = string(b)
		return noEOF(err)
	})
	return drv, err
}

// AddTextToStore adds content as the item named name with the given references (which
// must be valid already) and returns its path, TextPath(storeDir, name, content, refs).
// No signature is needed, which is how a .drv reaches a remote store: send its inputs
// first, the .drv last. The daemon also adds a temp root for the result.
func (c *Conn) AddTextToStore(ctx context.Context, name string, content []byte, refs []string) (p string, err error) {
	err = c.call(ctx, "add-text-to-store", 1+len(refs), func(s *stats) error {
		err := c.request(nil, opAddTextToStore, func() error {
			if err := WriteStr(c.w, []byte(name)); err != nil {
				return err
			}
			if err := WriteStr(c.w, content); err != nil {
				return err
			}
			return WriteStrs(c.w, refs)
		})
		if err != nil {
			return err
		}
		b, err := ReadStr(c.r)
		p, s.bytes = string(b), int64(len(content))
		return noEOF(err)
	})
	return p, err
}

// AddToStore adds the nar read from nar (all of it, written inline) as a recursive
// sha256 item named name and returns its path, SourcePath of the nar's hash (§4.5b):
// no signature and no references. The daemon reads the whole nar before it answers,
// holding it in memory, without a round trip per piece. The daemon also adds a temp
// root for the result. A failure to read nar leaves the connection out of step: it is
// closed.
func (c *Conn) AddToStore(ctx context.Context, name string, nar io.Reader) (p string, err error) {
	err = c.call(ctx, "add-to-store", 1, func(s *stats) error {
		var readErr error
		err := c.request(nil, opAddToStore, func() error {
			for _, err := range []error{WriteStr(c.w, []byte(name)), WriteInt(c.w, 1), WriteInt(c.w, 1), WriteStr(c.w, []byte("sha256"))} {
				if err != nil {
					return err
				}
			}
			n, err := io.Copy(c.w, readerOnly{nar, &readErr})
			s.bytes = n
			return err
		})
		if readErr != nil {
			c.shut(fmt.Errorf("reading the nar: %w", readErr))
			return &localError{fmt.Errorf("reading the nar: %w", readErr)}
		}
		if err != nil {
			return err
		}
		b, err := ReadStr(c.r)
		p = string(b)
		return noEOF(err)
	})
	return p, err
}

// readerOnly tells a read error from a write error in io.Copy.
type readerOnly struct {
	r   io.Reader
	err *error
}

func (r readerOnly) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil && err != io.EOF {
		*r.err = err
	}
	return n, err
}

// AddTempRoot protects p from the daemon's garbage collector for as long as the Conn
// lives.
func (c *Conn) AddTempRoot(ctx context.Context, p string) error {
	return c.call(ctx, "add-temp-root", 1, func(*stats) error {
		if err := c.request(nil, opAddTempRoot, strArg(c, p)); err != nil {
			return err
		}
		return c.okReply()
	})
}

// BuildPaths builds (or substitutes) paths: .drv files, DRV!OUT, or plain items. The
// build logs go to Log as they come. A failure is a DaemonError with status 100
// (permanent) or 101 (timeout), or 1. Beware: an invalid plain path without substitute
// is not a failure; check validity afterwards.
func (c *Conn) BuildPaths(ctx context.Context, paths []string, mode BuildMode) error {
	return c.call(ctx, "build-paths", len(paths), func(*stats) error {
		if mode != BuildNormal && c.minor < 15 {
			return &localError{fmt.Errorf("daemon protocol %#x has no build modes", c.version)}
		}
		err := c.request(nil, opBuildPaths, func() error {
			if err := WriteStrs(c.w, paths); err != nil {
				return err
			}
			if c.minor >= 15 {
				return WriteInt(c.w, uint32(mode))
			}
			return nil
		})
		if err != nil {
			return err
		}
		return c.okReply()
	})
}

// ExportPath writes the export item of p to w: nar, magic, path, references, deriver,
// signature flag and (when sign) the daemon's signature; without the leading 1 and the
// final 0 of a `guix archive --export` stream (see ExportItems). On error, w may hold a
// partial item that the caller must drop. If w fails, the rest of the item is read and
// dropped (keeping the Conn usable) and w's error is returned.
func (c *Conn) ExportPath(ctx context.Context, p string, sign bool, w io.Writer) error {
	return c.call(ctx, "export-path", 1, func(s *stats) error { return c.exportPath(s, p, sign, w) })
}

func (c *Conn) exportPath(s *stats, p string, sign bool, w io.Writer) error {
	t := &transfer{out: w}
	err := c.request(t, opExportPath, func() error {
		if err := WriteStr(c.w, []byte(p)); err != nil {
			return err
		}
		return WriteBool(c.w, sign)
	})
	if err == nil {
		err = c.okReply()
	}
	if err == nil && t.outErr != nil {
		err = &localError{fmt.Errorf("writing the export of %s: %w", p, t.outErr)}
	}
	s.bytes += t.n
	return err
}

// ExportItems writes a whole `guix archive --export` stream of paths, in the caller's
// order (references first): for each path, long 1 and its item, then long 0. On the
// first error it writes nothing more and returns it, so a reader of w sees a stream
// without its end marker and can refuse it whole.
func (c *Conn) ExportItems(ctx context.Context, paths []string, sign bool, w io.Writer) error {
	return c.call(ctx, "export", len(paths), func(s *stats) error {
		for _, p := range paths {
			if err := WriteLong(w, 1); err != nil {
				return &localError{fmt.Errorf("writing the export stream: %w", err)}
			}
			s.bytes += 8
			if err := c.exportPath(s, p, sign, w); err != nil {
				return err
			}
		}
		if err := WriteLong(w, 0); err != nil {
			return &localError{fmt.Errorf("writing the export stream: %w", err)}
		}
		s.bytes += 8
		return nil
	})
}

// ImportPaths feeds bundle, a `guix archive --export` stream whose items are signed by
// a key the daemon's ACL authorizes, to the daemon, which pulls it in 32 KiB requests.
// Each piece waits for its request: after each one the daemon checks that the client is
// quiet, and data sent ahead fails the import with "EOF expected (protocol error?)"
// (tried against the real daemon), so an import costs one round trip per 32 KiB.
// It returns the imported paths in stream order, including already valid ones. The
// daemon stops reading at the stream's end marker, so bundle must end there. Not
// atomic: items before a failing one stay imported. If bundle fails or ends early, the
// daemon is told the stream ended and the error says so.
func (c *Conn) ImportPaths(ctx context.Context, bundle io.Reader) (paths []string, err error) {
	err = c.call(ctx, "import-paths", 0, func(s *stats) error {
		t := &transfer{in: bundle}
		err := c.request(t, opImportPaths, nil)
		if err == nil {
			paths, err = ReadStrs(c.r)
			err = noEOF(err)
		}
		switch {
		case t.inErr == nil || t.inErr == io.EOF && err == nil:
		case t.inErr == io.EOF:
			err = fmt.Errorf("bundle ended before its end marker: %w", err)
		case err == nil:
			err = &localError{fmt.Errorf("reading the bundle: %w", t.inErr)}
		default:
			err = fmt.Errorf("reading the bundle: %w (daemon: %w)", t.inErr, err)
		}
		s.paths, s.bytes = len(paths), t.n
		return err
	})
	return paths, err
}
