package hook

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// FindGuix locates the real guix program: $OFFLOAD_GUIX if set, else the first `guix`
// on PATH that is not this very program (we may be installed as the daemon's GUIX),
// else the usual profile locations.
func FindGuix(getenv func(string) string, self string) (string, error) {
	if g := getenv("OFFLOAD_GUIX"); g != "" {
		if _, err := exec.LookPath(g); err != nil {
			return "", fmt.Errorf("OFFLOAD_GUIX=%s: %w", g, err)
		}
		return g, nil
	}
	var tried []string
	selfInfo, _ := os.Stat(self)
	isSelf := func(p string) bool {
		fi, err := os.Stat(p)
		return err == nil && selfInfo != nil && os.SameFile(fi, selfInfo)
	}
	for _, dir := range filepath.SplitList(getenv("PATH")) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, "guix")
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			continue
		}
		if isSelf(p) {
			tried = append(tried, p+" (this program)")
			continue
		}
		return p, nil
	}
	tried = append(tried, "guix on PATH")
	home := getenv("HOME")
	cands := []string{
		"/var/guix/profiles/per-user/root/current-guix/bin/guix",
		"/run/current-system/profile/bin/guix",
	}
	if home != "" {
		cands = append([]string{filepath.Join(home, ".config/guix/current/bin/guix")}, cands...)
	}
	for _, p := range cands {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && !isSelf(p) {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", errors.New("cannot find the real guix program (tried " + strings.Join(tried, ", ") + "); set OFFLOAD_GUIX")
}
