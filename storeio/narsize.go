package storeio

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// NarSize returns the size of the nar of path (what Dump would write, the nar size the
// store database records) from the file tree's metadata alone: no file is read, so it
// costs a stat per file however big the files are.
func NarSize(path string) (int64, error) {
	n, err := narNodeSize(path)
	if err != nil {
		return 0, fmt.Errorf("nar size of %s: %w", path, err)
	}
	return strSize(narMagic) + n, nil
}

// strSize is the wire size of a string: its length, its bytes, padding to 8.
func strSize(s string) int64 { return 8 + padded(int64(len(s))) }

func padded(n int64) int64 { return (n + 7) &^ 7 }

func narNodeSize(path string) (int64, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, err
	}
	n := strSize("(") + strSize("type") + strSize(")")
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		n += strSize("regular") + strSize("contents") + 8 + padded(fi.Size())
		if mode&0o100 != 0 {
			n += strSize("executable") + strSize("")
		}
	case mode&os.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return 0, err
		}
		n += strSize("symlink") + strSize("target") + strSize(target)
	case mode.IsDir():
		d, err := os.Open(path)
		if err != nil {
			return 0, err
		}
		names, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return 0, err
		}
		slices.Sort(names)
		n += strSize("directory")
		for _, name := range names {
			c, err := narNodeSize(filepath.Join(path, name))
			if err != nil {
				return 0, err
			}
			n += strSize("entry") + strSize("(") + strSize("name") + strSize(name) + strSize("node") + c + strSize(")")
		}
	default:
		return 0, fmt.Errorf("unsupported file type %v", mode.Type())
	}
	return n, nil
}
