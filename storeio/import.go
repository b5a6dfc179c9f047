package storeio

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// TempPrefix starts the names of the temporary directories ImportBundle restores
// into; a leading '.' means no such name is ever a valid store path.
const TempPrefix = ".offload-tmp-"

// ErrNotAllowed is returned by ImportBundle for an item that is not among the paths it
// was told to accept.
var ErrNotAllowed = errors.New("store path not requested")

// ImportOptions says where and what ImportBundle may restore.
type ImportOptions struct {
	StoreDir string   // logical store dir that item paths must be under
	RealDir  string   // physical dir to restore into; "" = StoreDir
	Allowed  []string // only these paths may appear; nil = any path
	// ACL: nil accepts unsigned items and any signature (test programs only); non-nil
	// requires every item signed, by a key in the ACL, over the right hash.
	ACL *ACL
	Log io.Writer // optional: one line per item
	// Replace: a path that already exists is replaced rather than left alone. The hook
	// sets it: the daemon asked for these outputs because they are not valid, so
	// whatever sits at their paths (left by a crash) must not be registered.
	Replace bool
}

// ImportBundle restores the items of the bundle in r into the store, all or nothing.
// Each item is restored into a temporary directory inside RealDir (named TempPrefix +
// random, never a valid store path) and its metadata and signature are checked; only
// when the whole bundle has been read and checked, end marker included, are the items
// renamed to their store paths. A path that already exists is left alone (unless
// Replace). On any error every temporary is removed and nothing appears at a store
// path. Data after the end marker is an error. It returns the items restored or found
// present.
func ImportBundle(r io.Reader, opt ImportOptions) ([]ItemInfo, error) {
	if opt.StoreDir == "" || !filepath.IsAbs(opt.StoreDir) || filepath.Clean(opt.StoreDir) != opt.StoreDir {
		return nil, fmt.Errorf("import: invalid store directory %q", opt.StoreDir)
	}
	realDir := opt.RealDir
	if realDir == "" {
		realDir = opt.StoreDir
	}
	type staged struct {
		tmp  string
		info ItemInfo
	}
	var items []staged
	cleanup := func() {
		for _, it := range items {
			removeTree(it.tmp)
		}
	}
	seen := map[string]bool{}
	br := NewBundleReader(r)
	for {
		tmp, err := tempName(realDir)
		if err != nil {
			cleanup()
			return nil, err
		}
		info, err := br.Next(tmp)
		if err == io.EOF {
			break
		}
		if err != nil {
			removeTree(tmp)
			cleanup()
			return nil, fmt.Errorf("import into %s: %w", realDir, err)
		}
		items = append(items, staged{tmp, info})
		if seen[info.Path] {
			cleanup()
			return nil, fmt.Errorf("import %s: %w: the path appears twice", info.Path, ErrInvalidArchive)
		}
		seen[info.Path] = true
		if err := checkItem(info, &opt); err != nil {
			cleanup()
			return nil, fmt.Errorf("import %s: %w", info.Path, err)
		}
	}
	var done []ItemInfo
	for i, it := range items {
		if err := placeItem(it.tmp, realDir, it.info, opt.Replace); err != nil {
			for _, rest := range items[i:] {
				removeTree(rest.tmp)
			}
			return done, fmt.Errorf("import %s: %w", it.info.Path, err)
		}
		done = append(done, it.info)
	}
	return done, nil
}

func tempName(dir string) (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("import: %w", err)
	}
	// The PID in the name lets CleanStaleTemps tell a dead importer's leftovers from
	// a live one's.
	return filepath.Join(dir, fmt.Sprintf("%s%d-%s", TempPrefix, os.Getpid(), hex.EncodeToString(b[:]))), nil
}

// CleanStaleTemps removes the temporary directories that importers which no longer
// run left in dir (a hook killed with SIGKILL mid-import cannot clean up after itself).
// It returns the names it removed.
func CleanStaleTemps(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, TempPrefix)
		if !ok {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 {
			continue // not ours to judge
		}
		if err := unix.Kill(pid, 0); err == nil || errors.Is(err, unix.EPERM) {
			continue // its importer still runs
		}
		if err := removeTree(filepath.Join(dir, name)); err != nil {
			return removed, err
		}
		removed = append(removed, name)
	}
	return removed, nil
}

// checkItem checks an item's metadata, that it was asked for, and its signature.
func checkItem(info ItemInfo, opt *ImportOptions) error {
	if err := ValidateStorePath(opt.StoreDir, info.Path); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArchive, err)
	}
	for _, ref := range info.References {
		if err := ValidateStorePath(opt.StoreDir, ref); err != nil {
			return fmt.Errorf("%w: reference: %w", ErrInvalidArchive, err)
		}
	}
	if info.Deriver != "" {
		if err := ValidateStorePath(opt.StoreDir, info.Deriver); err != nil {
			return fmt.Errorf("%w: deriver: %w", ErrInvalidArchive, err)
		}
	}
	if opt.Allowed != nil && !slices.Contains(opt.Allowed, info.Path) {
		return ErrNotAllowed
	}
	if opt.Log != nil {
		fmt.Fprintf(opt.Log, "importing file or directory '%s'...\n", info.Path)
	}
	if opt.ACL != nil {
		if info.Signature == nil {
			return ErrNoSignature
		}
		if _, err := VerifySignature(info.Signature, info.Hash, opt.ACL); err != nil {
			return err
		}
	}
	return nil
}

// placeItem renames a checked item from tmp to its store path (tmp is removed when the
// path is already there and is kept).
func placeItem(tmp, realDir string, info ItemInfo, replace bool) error {
	final := filepath.Join(realDir, filepath.Base(info.Path))
	if replace {
		if _, err := os.Lstat(final); err == nil {
			// Move the old one aside first, so the path never holds a mix of both.
			old, err := tempName(realDir)
			if err != nil {
				return err
			}
			if err := os.Rename(final, old); err != nil {
				return fmt.Errorf("move aside %s: %w", final, err)
			}
			defer removeTree(old)
		}
	}
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// No RENAME_NOREPLACE on this file system.
		if _, serr := os.Lstat(final); serr == nil {
			err = unix.EEXIST
		} else {
			err = os.Rename(tmp, final)
		}
	}
	if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
		// Already present (restored by someone else): keep theirs.
		return removeTree(tmp)
	}
	if err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, final, err)
	}
	return nil
}
