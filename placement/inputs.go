package placement

import (
	"fmt"
	"os"
	"slices"

	"offload/storeio"
)

// Sizer gives the size of a local store item as it would travel (its nar size).
type Sizer func(path string) (int64, error)

// Input is one store item a build needs and its size.
type Input struct {
	Path string
	Size int64
}

// DrvInputs lists what a build of drv needs that is known before the accept: the .drv
// itself, the needed outputs of its input derivations (read from their .drv files) and
// its sources, each once, in sorted order. The closure of these (what the daemon sends
// after the accept) is larger; its roots are where the bytes usually are.
func DrvInputs(drv string) ([]string, error) {
	d, err := readDrv(drv)
	if err != nil {
		return nil, err
	}
	paths := []string{drv}
	for _, in := range d.InputDrvs {
		id, err := readDrv(in.Path)
		if err != nil {
			return nil, err
		}
		for _, name := range in.Outputs {
			if o, ok := id.Output(name); ok {
				paths = append(paths, o.Path)
			}
		}
	}
	paths = append(paths, d.InputSrcs...)
	slices.Sort(paths)
	return slices.Compact(paths), nil
}

func readDrv(path string) (*storeio.Derivation, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the inputs of the build: %w", err)
	}
	d, err := storeio.ParseDerivation(path, b)
	if err != nil {
		return nil, fmt.Errorf("reading the inputs of the build: %w", err)
	}
	return d, nil
}

// Sized gives each path its size; an item whose size cannot be read (not valid here,
// unreadable) counts as empty: it only makes the estimate of a transfer smaller.
func Sized(paths []string, size Sizer) []Input {
	out := make([]Input, 0, len(paths))
	for _, p := range paths {
		n, err := size(p)
		if err != nil || n < 0 {
			n = 0
		}
		out = append(out, Input{Path: p, Size: n})
	}
	return out
}

// Total is the size of all the inputs.
func Total(in []Input) int64 {
	var n int64
	for _, i := range in {
		n += i.Size
	}
	return n
}

// Lacking is the size and number of the inputs that are not valid on a machine
// (valid nil: the machine was not asked, and lacks them all).
func Lacking(in []Input, valid map[string]bool) (bytes int64, n int) {
	for _, i := range in {
		if !valid[i.Path] {
			bytes += i.Size
			n++
		}
	}
	return bytes, n
}
