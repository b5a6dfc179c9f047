package hook

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"offload/storeio"
	"offload/workerproto"
)

// maxTextItem bounds the size of a store item sent by AddTextToStore: the daemon holds
// the text in memory, and past this size a signed bundle costs nothing extra.
const maxTextItem = 1 << 20

// textItem is a store item the machine's daemon can make itself from its text: a .drv,
// or a file Guix made with add-text-to-store (a gexp's builder script, a plain-file,
// a text-file). Its path follows from its name, content and references, so sending it
// by AddTextToStore needs no signature, hence no signature check on the machine: that
// check is a Guile start there (the daemon's `guix authenticate` helper) on the
// critical path of almost every small build, whose builder is such a file.
type textItem struct {
	path, name string
	text       []byte
	refs       []string
}

// splitTextItems separates, among the items the machine lacks, the text items (which
// go by AddTextToStore) from the rest (which go in a signed bundle). A .drv is always
// text, its references read from it; another item is text when it is a small
// non-executable regular file whose path is the text path of its content and of the
// references the local daemon records. Without a local daemon only .drv files are
// text. A text item that a bundled item refers to goes in the bundle, so that the
// bundle imports whole before the texts are added. Source items (sourceItem) are told
// apart too; having no references, they can go first.
func (h *Hook) splitTextItems(ctx context.Context, missing []string) (texts []textItem, sources []sourceItem, bundled []string, err error) {
	daemon := h.localDaemon(ctx)
	refsOf := map[string][]string{}
	for _, p := range missing {
		if strings.HasSuffix(p, ".drv") {
			t, err := readDrvText(p)
			if err != nil {
				return nil, nil, nil, err
			}
			texts = append(texts, t)
			continue
		}
		if daemon != nil {
			info, err := h.localInfo(ctx, daemon, p)
			if err != nil {
				return nil, nil, nil, &localError{Err: fmt.Errorf("local guix-daemon: %w", err)}
			}
			refsOf[p] = info.References
			if t, ok := h.asTextItem(p, info); ok {
				texts = append(texts, t)
				continue
			}
			if src, ok := h.asSourceItem(p, info); ok {
				sources = append(sources, src)
				continue
			}
		}
		bundled = append(bundled, p)
	}
	needed := map[string]bool{}
	for _, p := range bundled {
		for _, r := range refsOf[p] {
			needed[r] = true
		}
	}
	kept := texts[:0]
	for _, t := range texts {
		if needed[t.path] && !strings.HasSuffix(t.path, ".drv") {
			bundled = append(bundled, t.path)
			continue
		}
		kept = append(kept, t)
	}
	return kept, sources, bundled, nil
}

// maxSourceItem bounds a source item sent by AddToStore: the machine's daemon holds
// the whole nar in memory before it writes it.
const maxSourceItem = 512 << 20

// sourceItem is a store item the machine's daemon can make itself from its nar: one
// added with add-to-store, recursive sha256 (a local-file, a source tree, a
// recursive-hash origin), whose path is the source path of its nar's hash and which has
// no references. AddToStore re-creates it without a signature, reading the nar inline
// at the speed of the link, where a bundle pays a round trip per 32 KiB (ImportPaths)
// or the machine's Guile import.
type sourceItem struct {
	path, name string
	size       int64
}

// asSourceItem tells whether p is a source item (see sourceItem).
func (h *Hook) asSourceItem(p string, info workerproto.PathInfo) (sourceItem, bool) {
	if len(info.References) > 0 || info.Deriver != "" || info.NarSize > maxSourceItem {
		return sourceItem{}, false
	}
	_, name, _ := strings.Cut(path.Base(p), "-")
	if workerproto.SourcePath(h.Conf.StoreDir, name, info.NarHash) != p {
		return sourceItem{}, false
	}
	return sourceItem{path: p, name: name, size: int64(info.NarSize)}, true
}

// asTextItem reads p as a text item when it is one (see textItem).
func (h *Hook) asTextItem(p string, info workerproto.PathInfo) (textItem, bool) {
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 != 0 || st.Size() > maxTextItem {
		return textItem{}, false
	}
	f, err := os.Open(p)
	if err != nil {
		return textItem{}, false
	}
	defer f.Close()
	text, err := io.ReadAll(io.LimitReader(f, maxTextItem+1))
	if err != nil || len(text) > maxTextItem {
		return textItem{}, false
	}
	_, name, _ := strings.Cut(path.Base(p), "-")
	refs := uniqueSorted(info.References)
	if workerproto.TextPath(h.Conf.StoreDir, name, text, refs) != p {
		return textItem{}, false
	}
	return textItem{path: p, name: name, text: text, refs: refs}, true
}

// readDrvText reads a .drv as a text item, its references being its input sources and
// input derivations.
func readDrvText(p string) (textItem, error) {
	text, err := os.ReadFile(p)
	if err != nil {
		return textItem{}, &localError{Err: fmt.Errorf("reading %s: %w", p, err)}
	}
	d, err := storeio.ParseDerivation(p, text)
	if err != nil {
		return textItem{}, &localError{Err: err}
	}
	refs := append([]string(nil), d.InputSrcs...)
	for _, in := range d.InputDrvs {
		refs = append(refs, in.Path)
	}
	_, name, _ := strings.Cut(path.Base(p), "-")
	return textItem{path: p, name: name, text: text, refs: uniqueSorted(refs)}, nil
}

// addTexts adds the text items with AddTextToStore, each after those of its references
// that are among them, and checks that each lands at its own path.
func (h *Hook) addTexts(ctx context.Context, conn *workerproto.Conn, texts []textItem) error {
	byPath := map[string]textItem{}
	var paths []string
	for _, t := range texts {
		byPath[t.path] = t
		paths = append(paths, t.path)
	}
	for _, p := range topoOrder(paths, func(p string) []string { return byPath[p].refs }) {
		t := byPath[p]
		got, err := conn.AddTextToStore(ctx, t.name, t.text, t.refs)
		if err != nil {
			return fmt.Errorf("adding %s: %w", p, err)
		}
		if got != p {
			return fmt.Errorf("adding %s: the machine's daemon stored it as %s", p, got)
		}
	}
	return nil
}
