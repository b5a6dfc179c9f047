package drv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"offload/storeio"
	"offload/workerproto"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// AddItem creates a valid item called name from files and returns its path.
// files maps relative names to contents; the key "" alone makes the item a
// single regular file. A name ending in "*" is executable; contents
// starting with "->" make a symlink to the rest. The references are the
// valid items whose hash part occurs in the contents, as the daemon would
// find them.
func (s Store) AddItem(name string, files map[string]string) (string, error) {
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var fp strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&fp, "%q=%q;", k, files[k])
	}
	p := StorePath(s.Logical, "item:"+name+":"+fp.String(), name)
	if s.Valid(p) {
		return p, nil
	}
	real, err := s.Real(p)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(s.Physical, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(s.Physical, ".offload-tmp-item-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "item")
	for _, rel := range keys {
		content := files[rel]
		mode := os.FileMode(0o444)
		if strings.HasSuffix(rel, "*") {
			rel, mode = strings.TrimSuffix(rel, "*"), 0o555
		}
		f := filepath.Join(root, rel)
		if rel == "" {
			f = root
		} else if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return "", err
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, f)
		} else {
			err = os.WriteFile(f, []byte(content), mode)
		}
		if err != nil {
			return "", fmt.Errorf("add item %s: %w", name, err)
		}
	}
	valid, err := s.ValidPaths()
	if err != nil {
		return "", err
	}
	refs, err := ScanReferences(root, valid)
	if err != nil {
		return "", err
	}
	if err := os.Rename(root, real); err != nil {
		return "", fmt.Errorf("add item %s: %w", name, err)
	}
	return p, s.Register(Info{Path: p, References: refs})
}

// ValidPaths lists every valid item of s, sorted.
func (s Store) ValidPaths() ([]string, error) {
	ents, err := os.ReadDir(s.DB)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list store db: %w", err)
	}
	var out []string
	for _, e := range ents {
		p := s.Logical + "/" + e.Name()
		if s.CheckPath(p) == nil && s.Valid(p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// BuildInputs returns what guix-daemon sends a hook on its inputs line for
// d: the closure of the .drv itself, of the needed outputs of its input
// derivations and of its sources, sorted.
func (s Store) BuildInputs(d *Derivation) ([]string, error) {
	roots := []string{d.Path}
	for _, in := range d.InputDrvs {
		dep, err := s.Read(in.Path)
		if err != nil {
			return nil, err
		}
		for _, name := range in.Outputs {
			o, ok := dep.Output(name)
			if !ok {
				return nil, fmt.Errorf("%s has no output %q", in.Path, name)
			}
			roots = append(roots, o.Path)
		}
	}
	roots = append(roots, d.InputSrcs...)
	return s.Closure(roots)
}

// MissingOutputs returns the output paths of d that are not valid in s,
// what the daemon sends on the outputs line.
func (s Store) MissingOutputs(d *Derivation) []string {
	var out []string
	for _, p := range d.OutputPaths() {
		if !s.Valid(p) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// AddText adds text as a text item called name with the given references (which must
// be valid), at the path the daemon's AddTextToStore gives it, as Guix's
// add-text-to-store makes a gexp's builder script or a plain-file; it returns the path.
func (s Store) AddText(name, text string, refs []string) (string, error) {
	p := workerproto.TextPath(s.Logical, name, []byte(text), refs)
	if s.Valid(p) {
		return p, nil
	}
	for _, r := range refs {
		if !s.Valid(r) {
			return "", fmt.Errorf("add text %s: reference %s is not valid", name, r)
		}
	}
	real, err := s.Real(p)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(s.Physical, 0o755); err != nil {
		return "", err
	}
	if err := WriteFileAtomic(real, []byte(text), 0o444); err != nil {
		return "", fmt.Errorf("add text %s: %w", name, err)
	}
	return p, s.Register(Info{Path: p, References: refs})
}

// AddSource adds files (as AddItem takes them) as a source item, the way add-to-store
// does with a recursive sha256: its path is the source path of its nar's hash, and it
// has no references. It returns the path.
func (s Store) AddSource(name string, files map[string]string) (string, error) {
	tmpStore := Store{Logical: s.Logical, Physical: filepath.Join(s.Physical, ".offload-tmp-source-"+name), DB: filepath.Join(s.Physical, ".offload-tmp-source-db-"+name)}
	defer os.RemoveAll(tmpStore.Physical)
	defer os.RemoveAll(tmpStore.DB)
	p, err := tmpStore.AddItem(name, files)
	if err != nil {
		return "", err
	}
	tmpReal, _ := tmpStore.Real(p)
	h := sha256.New()
	if err := storeio.Dump(h, tmpReal); err != nil {
		return "", err
	}
	src := workerproto.SourcePath(s.Logical, name, hex.EncodeToString(h.Sum(nil)))
	if s.Valid(src) {
		return src, nil
	}
	real, err := s.Real(src)
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmpReal, real); err != nil {
		return "", fmt.Errorf("add source %s: %w", name, err)
	}
	return src, s.Register(Info{Path: src})
}
