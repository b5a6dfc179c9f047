package hook

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
)

// removableRoots picks, from the names in the machine's roots directories, those to
// remove before the build: those of this host's dead hooks (staleRoots), and any of
// this build's own names, which can only be left by an earlier process with our pid
// (`guix build -r` refuses to replace a root).
func removableRoots(names []string, root string) []string {
	out := staleRoots(names, processAlive)
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, root)
		if !ok {
			continue
		}
		digits, numbered := strings.CutPrefix(rest, "-") // ROOT-0, ROOT-1...: several outputs
		if rest == "" || rest == ".drv" || numbered && digits != "" && strings.Trim(digits, "0123456789") == "" {
			out = append(out, n)
		}
	}
	return out
}

// rootName names this build's remote GC roots after this host and process, so that
// concurrent hooks and hosts never share one.
func rootName(drv string) string {
	return fmt.Sprintf("%s-%d-%s", rootHost(), os.Getpid(), strings.TrimSuffix(path.Base(drv), ".drv"))
}

// rootHost is this host's name as it starts our remote GC roots' names.
func rootHost() string {
	host, _ := os.Hostname()
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r < ' ' {
			return '_'
		}
		return r
	}, host)
}

// staleRoots picks, from the names of the remote roots directory, those this host's
// hooks made and whose process is gone: a hook killed by the daemon (SIGKILL) or cut
// off from the machine could not remove them, and they would keep the outputs from
// the machine's garbage collector for ever.
func staleRoots(names []string, alive func(pid int) bool) []string {
	prefix := rootHost() + "-"
	var stale []string
	for _, n := range names {
		rest, ok := strings.CutPrefix(n, prefix)
		// The names travel space-separated to the machine's shell: none with a blank.
		if !ok || strings.ContainsAny(n, "/\x00 \t\r\n") || strings.HasPrefix(n, "-") {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || alive(pid) {
			continue
		}
		stale = append(stale, n)
	}
	return stale
}

// processAlive tells whether a local process exists.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
