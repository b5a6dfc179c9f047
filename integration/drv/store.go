package drv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"offload/storeio"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Store is a fake store: item paths are Logical (e.g. /tmp/x/gnu/store/...),
// their bytes live under Physical, and DB holds one file per valid item.
// Remote machines in tests use another Physical dir for the same Logical
// dir, so that nothing crosses from one side to the other except through
// the hook.
type Store struct {
	Logical  string
	Physical string
	DB       string
}

// StoreFromEnv reads the layout that fakeguix uses: NIX_STORE_DIR (default
// /gnu/store), FAKEGUIX_STORE (default the logical dir) and FAKEGUIX_DB
// (default PHYSICAL/../db).
func StoreFromEnv(getenv func(string) string) Store {
	s := Store{Logical: getenv("NIX_STORE_DIR"), Physical: getenv("FAKEGUIX_STORE"), DB: getenv("FAKEGUIX_DB")}
	if s.Logical == "" {
		s.Logical = "/gnu/store"
	}
	s.Logical = strings.TrimRight(s.Logical, "/")
	if s.Physical == "" {
		s.Physical = s.Logical
	}
	if s.DB == "" {
		s.DB = filepath.Join(filepath.Dir(s.Physical), "db")
	}
	return s
}

// Env returns the variables that make fakeguix use s.
func (s Store) Env() []string {
	return []string{"NIX_STORE_DIR=" + s.Logical, "FAKEGUIX_STORE=" + s.Physical, "FAKEGUIX_DB=" + s.DB}
}

// CheckPath reports whether p is a well-formed item path of s:
// LOGICAL/ + 32 Nix base-32 characters + "-" + a name.
func (s Store) CheckPath(p string) error {
	return storeio.ValidateStorePath(s.Logical, p)
}

// Real returns the physical file name of item p.
func (s Store) Real(p string) (string, error) {
	if err := s.CheckPath(p); err != nil {
		return "", err
	}
	return filepath.Join(s.Physical, filepath.Base(p)), nil
}

func (s Store) dbFile(p string) string { return filepath.Join(s.DB, filepath.Base(p)) }

// Valid reports whether p is a valid item: registered in the db and present.
func (s Store) Valid(p string) bool {
	real, err := s.Real(p)
	if err != nil {
		return false
	}
	if _, err := os.Stat(s.dbFile(p)); err != nil {
		return false
	}
	_, err = os.Lstat(real)
	return err == nil
}

// Info is what the db records about a valid item.
type Info struct {
	Path       string
	References []string
	Deriver    string
}

// ErrNotValid is returned (wrapped) for items that are not valid.
var ErrNotValid = errors.New("not valid")

// Info returns the db record of p. The error wraps ErrNotValid when p is not
// a valid item.
func (s Store) Info(p string) (*Info, error) {
	if !s.Valid(p) {
		return nil, fmt.Errorf("path `%s' is %w", p, ErrNotValid)
	}
	f, err := os.Open(s.dbFile(p))
	if err != nil {
		return nil, fmt.Errorf("read store db: %w", err)
	}
	defer f.Close()
	info := &Info{Path: p}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		switch k {
		case "deriver":
			info.Deriver = v
		case "reference":
			info.References = append(info.References, v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read store db entry of %s: %w", p, err)
	}
	return info, nil
}

// Register records info in the db (atomically: a reader sees the old entry
// or the new one). The item's bytes must already be in place.
func (s Store) Register(info Info) error {
	if err := s.CheckPath(info.Path); err != nil {
		return err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "deriver: %s\n", info.Deriver)
	refs := append([]string(nil), info.References...)
	sort.Strings(refs)
	for _, r := range refs {
		fmt.Fprintf(&b, "reference: %s\n", r)
	}
	if err := os.MkdirAll(s.DB, 0o755); err != nil {
		return fmt.Errorf("register %s: %w", info.Path, err)
	}
	tmp, err := os.CreateTemp(s.DB, ".tmp-")
	if err != nil {
		return fmt.Errorf("register %s: %w", info.Path, err)
	}
	_, err = tmp.Write(b.Bytes())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.dbFile(info.Path))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("register %s: %w", info.Path, err)
	}
	return nil
}

// Closure returns paths and everything they refer to, directly or not,
// sorted. Every item must be valid.
func (s Store) Closure(paths []string) ([]string, error) {
	seen := map[string]bool{}
	var visit func(p string) error
	visit = func(p string) error {
		if seen[p] {
			return nil
		}
		seen[p] = true
		info, err := s.Info(p)
		if err != nil {
			return err
		}
		for _, r := range info.References {
			if err := visit(r); err != nil {
				return err
			}
		}
		return nil
	}
	for _, p := range paths {
		if err := visit(p); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// TopoSort orders paths so that an item comes after the items of the set
// that it refers to (references first), as the daemon exports them.
func (s Store) TopoSort(paths []string) ([]string, error) {
	in := map[string]bool{}
	for _, p := range paths {
		in[p] = true
	}
	sorted := append([]string(nil), paths...)
	sort.Strings(sorted)
	state := map[string]int{} // 1 visiting, 2 done
	var out []string
	var visit func(p string) error
	visit = func(p string) error {
		switch state[p] {
		case 1:
			return fmt.Errorf("reference cycle through %s", p)
		case 2:
			return nil
		}
		state[p] = 1
		info, err := s.Info(p)
		if err != nil {
			return err
		}
		for _, r := range info.References {
			if in[r] && r != p {
				if err := visit(r); err != nil {
					return err
				}
			}
		}
		state[p] = 2
		out = append(out, p)
		return nil
	}
	for _, p := range sorted {
		if err := visit(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ScanReferences returns the candidates whose hash part (the 32 characters
// after the store dir) occurs somewhere in the files, link targets or
// names under physPath, the way the daemon finds an item's references.
func ScanReferences(physPath string, candidates []string) ([]string, error) {
	hashes := map[string]string{}
	for _, c := range candidates {
		base := filepath.Base(c)
		if len(base) >= 32 {
			hashes[base[:32]] = c
		}
	}
	found := map[string]bool{}
	scan := func(b []byte) {
		for h, c := range hashes {
			if !found[c] && bytes.Contains(b, []byte(h)) {
				found[c] = true
			}
		}
	}
	err := filepath.Walk(physPath, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if path != physPath { // the item's own name is not content
			scan([]byte(fi.Name()))
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			t, err := os.Readlink(path)
			if err != nil {
				return err
			}
			scan([]byte(t))
		case fi.Mode().IsRegular():
			return scanFile(path, scan)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan references of %s: %w", physPath, err)
	}
	var out []string
	for c := range found {
		out = append(out, c)
	}
	sort.Strings(out)
	return out, nil
}

// scanFile feeds the file to scan in overlapping chunks so that a hash
// split across two reads is still seen.
func scanFile(path string, scan func([]byte)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	const overlap = 32
	buf := make([]byte, 64<<10)
	keep := 0
	for {
		n, err := f.Read(buf[keep:])
		if n > 0 {
			scan(buf[:keep+n])
			if keep+n > overlap {
				copy(buf, buf[keep+n-overlap:keep+n])
				keep = overlap
			} else {
				keep += n
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
