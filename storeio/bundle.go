package storeio

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
)

const (
	// exportMagic ("NIXE") follows each nar in an export bundle.
	exportMagic = 0x4558494e
	maxPathLen  = 4096
	maxRefs     = 1 << 20
	maxSigLen   = 1 << 20
)

// ItemInfo describes one item of an export bundle.
type ItemInfo struct {
	Path       string
	References []string
	Deriver    string // may be ""
	Signature  []byte // sexp text; nil = unsigned
	// Hash is the SHA-256 over the item's bytes from the start of its nar through the
	// deriver: what a signature covers.
	Hash    [32]byte
	NarSize int64
	// NarHash is the SHA-256 of the nar alone, as the store database records it.
	NarHash [32]byte
}

// BundleWriter writes an export bundle, as `guix archive --export` does.
type BundleWriter struct {
	bw    *bufio.Writer
	ww    *wireWriter
	key   *SecretKey
	buf   []byte
	items []ItemInfo
	err   error
}

// NewBundleWriter returns a writer of an export bundle to w. Items are signed with key;
// with a nil key they are unsigned (or carry the Signature given to Add as is).
func NewBundleWriter(w io.Writer, key *SecretKey) *BundleWriter {
	bw := bufio.NewWriterSize(w, 64<<10)
	return &BundleWriter{bw: bw, ww: &wireWriter{w: bw}, key: key}
}

// Add writes one item: the nar of fsPath (which may differ from info.Path, for a store
// kept under another physical directory), then info's metadata, then the signature over
// the hash it computed. info.Hash, NarHash and NarSize are ignored and recomputed. A
// failed Add leaves the bundle unusable: every later call returns the same error.
func (b *BundleWriter) Add(fsPath string, info ItemInfo) error {
	if b.err != nil {
		return b.err
	}
	if b.buf == nil {
		b.buf = make([]byte, copyBufSize)
	}
	b.err = b.add(fsPath, &info)
	if b.err == nil {
		b.items = append(b.items, info)
	}
	return b.err
}

func (b *BundleWriter) add(fsPath string, info *ItemInfo) error {
	ww := b.ww
	ww.h = nil
	if err := ww.writeInt(1); err != nil {
		return fmt.Errorf("export %s: %w", info.Path, err)
	}
	h := sha256.New()
	ww.h = h
	defer func() { ww.h = nil }()
	start := ww.n
	if err := dumpNar(ww, fsPath, b.buf); err != nil {
		return fmt.Errorf("export %s: %w", info.Path, err)
	}
	info.NarSize = ww.n - start
	h.Sum(info.NarHash[:0])
	err := ww.writeInt(exportMagic)
	if err == nil {
		err = ww.writeString(info.Path)
	}
	if err == nil {
		err = ww.writeInt(uint64(len(info.References)))
	}
	if err == nil {
		err = ww.writeStrings(info.References...)
	}
	if err == nil {
		err = ww.writeString(info.Deriver)
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", info.Path, err)
	}
	h.Sum(info.Hash[:0])
	ww.h = nil
	if b.key != nil {
		sig, err := b.key.Sign(info.Hash)
		if err != nil {
			return fmt.Errorf("export %s: sign: %w", info.Path, err)
		}
		info.Signature = sig
	}
	if info.Signature == nil {
		err = ww.writeInt(0)
	} else if err = ww.writeInt(1); err == nil {
		err = ww.writeString(string(info.Signature))
	}
	if err == nil {
		err = b.bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("export %s: %w", info.Path, err)
	}
	return nil
}

// Items returns what was written so far, with hashes, sizes and signatures filled in.
func (b *BundleWriter) Items() []ItemInfo { return slices.Clone(b.items) }

// Close writes the end marker and flushes. It does not close the underlying writer.
func (b *BundleWriter) Close() error {
	if b.err != nil {
		return b.err
	}
	b.ww.h = nil
	if err := b.ww.writeInt(0); err != nil {
		b.err = fmt.Errorf("export: %w", err)
		return b.err
	}
	if err := b.bw.Flush(); err != nil {
		b.err = fmt.Errorf("export: %w", err)
		return b.err
	}
	b.err = errors.New("export: bundle writer closed")
	return nil
}

// BundleReader reads an export bundle item by item, streaming.
type BundleReader struct {
	br   *bufio.Reader
	w    wireReader
	buf  []byte
	err  error
	done bool
}

// NewBundleReader returns a reader of the export bundle in r. It reads r to its end:
// data after the end marker is an error.
func NewBundleReader(r io.Reader) *BundleReader {
	br := bufio.NewReaderSize(r, 64<<10)
	return &BundleReader{br: br, w: wireReader{r: br}}
}

// Next reads the next item. Its nar is restored at restorePath (which must not exist)
// when that is not "", or checked and discarded. On error nothing remains at
// restorePath; on success the caller owns what is there. After the end marker Next
// returns io.EOF. Errors are sticky.
func (b *BundleReader) Next(restorePath string) (ItemInfo, error) {
	if b.done {
		return ItemInfo{}, io.EOF
	}
	if b.err != nil {
		return ItemInfo{}, b.err
	}
	info, err := b.next(restorePath)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return info, err
}

func (b *BundleReader) next(restorePath string) (ItemInfo, error) {
	var info ItemInfo
	if b.buf == nil {
		b.buf = make([]byte, copyBufSize)
	}
	w := &b.w
	w.h = nil
	mark, err := w.readInt()
	if err != nil {
		return info, fmt.Errorf("reading bundle: %w", err)
	}
	switch mark {
	case 0:
		b.done = true
		if _, err := b.br.ReadByte(); err != io.EOF {
			if err != nil {
				return info, fmt.Errorf("reading bundle: %w", err)
			}
			return info, fmt.Errorf("%w: trailing data after the end of the bundle", ErrInvalidArchive)
		}
		return info, io.EOF
	case 1:
	default:
		return info, fmt.Errorf("%w: invalid inter-file archive mark %#x at byte %d", ErrInvalidArchive, mark, w.n-8)
	}
	h := sha256.New()
	w.h = h
	defer func() { w.h = nil }()
	start := w.n
	if restorePath != "" {
		err = restoreNar(w, restorePath, b.buf)
	} else {
		err = (&narParser{w: w, sink: &discardSink{buf: b.buf}}).parse(-1, "")
	}
	if err != nil {
		return info, fmt.Errorf("reading bundle item at byte %d: %w", start-8, err)
	}
	info.NarSize = w.n - start
	h.Sum(info.NarHash[:0])
	if err := b.trailer(&info, h); err != nil {
		if restorePath != "" {
			if rerr := removeTree(restorePath); rerr != nil {
				err = fmt.Errorf("%w (and removing %s: %v)", err, restorePath, rerr)
			}
		}
		return info, fmt.Errorf("reading bundle item at byte %d: %w", start-8, err)
	}
	return info, nil
}

// trailer reads what follows an item's nar.
func (b *BundleReader) trailer(info *ItemInfo, h interface{ Sum([]byte) []byte }) error {
	w := &b.w
	magic, err := w.readInt()
	if err != nil {
		return err
	}
	if magic != exportMagic {
		return fmt.Errorf("%w: corrupt file set archive (bad magic %#x)", ErrInvalidArchive, magic)
	}
	if info.Path, err = w.readString(maxPathLen); err != nil {
		return fmt.Errorf("store path: %w", err)
	}
	n, err := w.readInt()
	if err != nil {
		return fmt.Errorf("%s: references: %w", info.Path, err)
	}
	if n > maxRefs {
		return fmt.Errorf("%w: %s: %d references", ErrInvalidArchive, info.Path, n)
	}
	for range n {
		ref, err := w.readString(maxPathLen)
		if err != nil {
			return fmt.Errorf("%s: references: %w", info.Path, err)
		}
		info.References = append(info.References, ref)
	}
	if info.Deriver, err = w.readString(maxPathLen); err != nil {
		return fmt.Errorf("%s: deriver: %w", info.Path, err)
	}
	h.Sum(info.Hash[:0])
	w.h = nil
	hasSig, err := w.readInt()
	if err != nil {
		return fmt.Errorf("%s: %w", info.Path, err)
	}
	switch hasSig {
	case 0:
	case 1:
		sig, err := w.readBytes(maxSigLen)
		if err != nil {
			return fmt.Errorf("%s: signature: %w", info.Path, err)
		}
		info.Signature = bytes.Clone(sig)
	default:
		return fmt.Errorf("%w: %s: bad signature flag %d", ErrInvalidArchive, info.Path, hasSig)
	}
	return nil
}

// ListBundle reads a whole bundle without restoring anything and returns its items
// with their hashes and sizes.
func ListBundle(r io.Reader) ([]ItemInfo, error) {
	br := NewBundleReader(r)
	var items []ItemInfo
	for {
		info, err := br.Next("")
		if err == io.EOF {
			return items, nil
		}
		if err != nil {
			return items, err
		}
		items = append(items, info)
	}
}

// VerifyBundle checks every item of the bundle in r against acl (nil: no key is
// authorized) without restoring anything, and writes one line per item to w:
// "PATH: ok" or "PATH: REASON". It returns an error if any item is bad or the bundle is
// malformed.
func VerifyBundle(r io.Reader, acl *ACL, w io.Writer) error {
	br := NewBundleReader(r)
	bad, total := 0, 0
	for {
		info, err := br.Next("")
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		total++
		verdict := "ok"
		if _, err := VerifySignature(info.Signature, info.Hash, acl); err != nil {
			verdict = err.Error()
			bad++
		}
		if _, err := fmt.Fprintf(w, "%s: %s\n", info.Path, verdict); err != nil {
			return err
		}
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d items failed verification", bad, total)
	}
	return nil
}
