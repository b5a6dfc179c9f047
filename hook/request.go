package hook

import (
	"fmt"
	"strings"

	"offload/machines"
	"offload/storeio"
)

// Request is one line the daemon writes: "WANTS-LOCAL SYSTEM DRV-FILE FEATURES".
type Request struct {
	WantsLocal bool
	System     string
	Drv        string
	Features   []string
}

// ParseRequest parses a request line (without its newline). storeDir is the local
// store directory the .drv must live in.
func ParseRequest(line, storeDir string) (Request, error) {
	bad := func(why string) (Request, error) {
		return Request{}, fmt.Errorf("malformed request line %q: %s", line, why)
	}
	// The daemon ends the line with a space when FEATURES is empty, so split on
	// single spaces and allow exactly that empty last field.
	f := strings.Split(line, " ")
	if len(f) == 3 {
		f = append(f, "")
	}
	if len(f) != 4 {
		return bad("want WANTS-LOCAL SYSTEM DRV-FILE FEATURES")
	}
	var r Request
	switch f[0] {
	case "1":
		r.WantsLocal = true
	case "0":
	default:
		return bad("WANTS-LOCAL must be 0 or 1")
	}
	if !validSystem(f[1]) {
		return bad("invalid system type")
	}
	r.System = f[1]
	if err := storeio.ValidateDrvPath(storeDir, f[2]); err != nil {
		return bad(err.Error())
	}
	r.Drv = f[2]
	if f[3] != "" {
		for _, feat := range strings.Split(f[3], ",") {
			if feat == "" || strings.ContainsAny(feat, "\t\x00") {
				return bad("invalid feature list")
			}
		}
	}
	r.Features = machines.ParseRequestFeatures(f[3])
	return r, nil
}

// validSystem accepts system types such as x86_64-linux or i586-gnu.
func validSystem(s string) bool {
	if s == "" || len(s) > 64 || !strings.Contains(s, "-") {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// parsePaths parses the inputs or outputs line sent after "# accept": store paths
// separated by spaces (each followed by one).
func parsePaths(line, storeDir, what string) ([]string, error) {
	var paths []string
	for _, p := range strings.Fields(line) {
		if err := storeio.ValidateStorePath(storeDir, p); err != nil {
			return nil, fmt.Errorf("invalid path in %s line: %w", what, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}
