package hook

import (
	"fmt"
	"io"
	"path"
	"strings"

	"offload/machines"
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

// substituted is what the machine was asked to fetch itself, and what it fetched.
type substituted struct {
	asked int
	items []string // became valid there
}

// substitute asks the machine to fetch the paths subs (all missing there) from its
// substitute servers and returns those still missing: the machine's second answer,
// held to the same rule as its first (only paths we asked about).
func (s *session) substitute(subs []string) (still map[string]bool, got substituted, err error) {
	m := s.m
	fail := func() error {
		return s.failure("`guix build` of substitutes", "asking for substitutes", s.stderr.tails[0])
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
	for {
		l, err := s.line()
		if err != nil {
			return nil, got, fail()
		}
		if l == lineMissingEnd {
			break
		}
		for _, p := range strings.Fields(l) {
			if !asked[p] {
				s.abort()
				return nil, got, fmt.Errorf("it answered `guix archive --missing` with a path we did not ask about: %q (after fetching substitutes)", p)
			}
			still[p] = true
		}
	}
	got.asked = len(subs)
	for _, p := range subs {
		if !still[p] {
			got.items = append(got.items, p)
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

// substituteNote is the start of the line that says what the machine fetched itself,
// with the nar sizes of the local copies; what it could not fetch is uploaded.
func (s *session) substituteNote(got substituted) string {
	return fmt.Sprintf("machine '%s' substituted %d of %d missing input%s%s", s.m.Display(), len(got.items), got.asked, plural(got.asked), s.h.sizeNote(got.items))
}

// sizeNote is " (X MiB)", the local nar sizes of paths (as the local daemon records
// them, else as read from the store), or "" when they cannot be read.
func (h *Hook) sizeNote(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	size := h.sizer()
	var total int64
	for _, p := range paths {
		n, err := size(path.Join(h.Conf.StoreDir, path.Base(p)))
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
