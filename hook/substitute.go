package hook

import (
	"fmt"
	"io"
	"path"
	"strings"

	"offload/machines"
	"offload/storeio"
)

// SubstitutesEnv names the machines that fetch substitutes themselves (issue 14): "all",
// or a comma-separated list of NAME (any port) and NAME:PORT. An environment variable
// of the hook rather than a machines.scm field, so that Guix's own hook still reads the
// file.
const SubstitutesEnv = "OFFLOAD_SUBSTITUTES"

// Substitutes is SubstitutesEnv parsed: which machines fetch substitutes themselves.
type Substitutes struct {
	all   bool
	names map[string]bool // NAME or NAME:PORT
}

// ParseSubstitutes reads the value of SubstitutesEnv; blanks around entries are
// ignored, and so are empty entries.
func ParseSubstitutes(v string) Substitutes {
	var s Substitutes
	for _, e := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if e == "all" {
			s.all = true
			continue
		}
		if s.names == nil {
			s.names = map[string]bool{}
		}
		s.names[e] = true
	}
	return s
}

// For tells whether machine m fetches substitutes itself.
func (s Substitutes) For(m *machines.Machine) bool {
	return s.all || s.names[m.Name] || s.names[m.ID()]
}

// substituteFuncs defines the session script's step that makes the machine fetch
// substitutes (see sessionScript): `substitute PATH...` asks `guix build --dry-run`
// which of the PATHs would be downloaded (show-what-to-build's listing, guix/ui.scm:
// "The following files would be downloaded:" or "N MB would be downloaded:", then
// the paths indented by two spaces) and prints "offload-substitute PATH" for each;
// then it fetches the PATHs with `guix build --keep-going` (a failed one does not stop
// the others, and its status is not the script's: what is still missing is uploaded).
// All of them, not only those listed: real Guix's build-notifier lists downloads for
// derivations only, and a plain item it does not list may still be substitutable. Then it prints those of the PATHs still missing (`guix archive
// --missing`), as the first answer. The listing is read from the dry run's stderr
// alone; its stdout, and the fetch's, go to stderr: the session's stdout is its framing.
var substituteFuncs = `substitute() { dl=$(guix build --dry-run "$@" 2>&1 >/dev/null | sed -n '` + dryRunSed + `'); ` +
	`for p in $dl; do printf "` + substitutePrefix + `%s\n" "$p"; done; ` +
	`guix build --keep-going "$@" </dev/null >&2 || echo "offload: guix build of substitutes exited with status $?" >&2; ` +
	`printf "%s\n" "$@" | guix archive --missing; }`

// dryRunSed prints the paths that show-what-to-build lists as would be downloaded:
// from its "... would be downloaded:" line to the next line that is not indented,
// the indented absolute paths.
const dryRunSed = `/would be downloaded:$/,/^[^ ]/s/^  *\(\/[^ ]*\)$/\1/p`

// The session script's lines of the substitute step; lineMissingEnd ends it.
const (
	substituteWord   = "substitute" // the hook's line: "substitute PATH..."
	substitutePrefix = "offload-substitute "
)

// substituted is what the machine fetched itself.
type substituted struct {
	items  []string // became valid there
	failed []string // listed as substitutable, still missing
}

// substitute asks the machine to fetch the paths subs (all missing there) from its
// substitute servers and returns those still missing: the machine's second answer,
// held to the same rule as its first (only paths we asked about).
func (s *session) substitute(subs []string) (still map[string]bool, got substituted, err error) {
	m := s.m
	fail := func() error {
		return s.failure("`guix build` of substitutes", "asking machine '%s' to fetch substitutes", "asking for substitutes", s.stderr.tails[0])
	}
	if _, err := io.WriteString(s.stdin, substituteWord+" "+strings.Join(subs, " ")+"\n"); err != nil {
		return nil, got, fail()
	}
	asked := map[string]bool{}
	for _, p := range subs {
		asked[p] = true
	}
	stop := make(chan struct{})
	go s.h.keepSaying(fmt.Sprintf("machine '%s' is fetching substitutes", m.Display()), stop)
	defer close(stop)
	still = map[string]bool{}
	listed := map[string]bool{}
	for {
		l, err := s.line()
		if err != nil {
			return nil, got, fail()
		}
		if l == lineMissingEnd {
			break
		}
		if p, ok := strings.CutPrefix(l, substitutePrefix); ok {
			if !asked[p] {
				s.abort()
				return nil, got, fmt.Errorf("machine '%s' listed as substitutable a path we did not ask about: %q", m.Display(), p)
			}
			listed[p] = true
			continue
		}
		for _, p := range strings.Fields(l) {
			if !asked[p] {
				s.abort()
				return nil, got, fmt.Errorf("machine '%s' answered `guix archive --missing` with a path we did not ask about: %q (after fetching substitutes)", m.Display(), p)
			}
			still[p] = true
		}
	}
	for _, p := range subs {
		switch {
		case !still[p]:
			got.items = append(got.items, p)
		case listed[p]:
			got.failed = append(got.failed, p)
		}
	}
	return still, got, nil
}

// substituteCandidates are the missing paths the machine may fetch itself: all but the
// derivation being built, which is ours (and no substitute server has it).
func substituteCandidates(missing []string, drv string) []string {
	var out []string
	for _, p := range missing {
		if p != drv {
			out = append(out, p)
		}
	}
	return out
}

// substituteNote is the start of the line that says what the machine fetched itself
// itself, with the nar sizes of the local items.
func (s *session) substituteNote(got substituted) string {
	note := fmt.Sprintf("machine '%s' substituted %d store item%s%s", s.m.Display(), len(got.items), plural(len(got.items)), s.sizeNote(got.items))
	if n := len(got.failed); n > 0 {
		note += fmt.Sprintf(" (%d substitute%s failed: sending %s)", n, plural(n), map[bool]string{true: "it", false: "them"}[n == 1])
	}
	return note
}

// sizeNote is " (X MiB)", the local nar sizes of paths, or "" when they cannot be read.
func (s *session) sizeNote(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	var total int64
	for _, p := range paths {
		n, err := storeio.NarSize(path.Join(s.h.Conf.StoreDir, path.Base(p)))
		if err != nil {
			return ""
		}
		total += n
	}
	return " (" + mib(total) + ")"
}

// keepSaying prints line every progress interval (see reportProgress) until stop is
// closed: the daemon's max-silent-time clock runs while the machine fetches.
func (h *Hook) keepSaying(line string, stop <-chan struct{}) {
	h.everyProgress(stop, func() { h.note("%s", line) })
}
