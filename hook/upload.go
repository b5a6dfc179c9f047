package hook

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"
)

// upload asks which of the .drv and inputs the machine lacks, tells it how the
// transfers will go and which stale roots to remove, and sends what it lacks: one
// stream of `guix archive --export`, compressed as mode and the machine allow.
func (s *session) upload(mode string, inputs []string) error {
	h, m := s.h, s.m
	asking := func() error {
		return s.failure("`guix archive --missing`", "asking which inputs it lacks", s.stderr.tails[0])
	}
	want := uniqueSorted(append([]string{s.req.Drv}, inputs...))
	if _, err := io.WriteString(s.stdin, strings.Join(want, " ")+"\n"); err != nil {
		return asking()
	}
	wanted := map[string]bool{}
	for _, p := range want {
		wanted[p] = true
	}
	has, lacked := map[string]bool{}, map[string]bool{}
	var names, missing []string
	for {
		l, err := s.line()
		if err != nil {
			return asking()
		}
		if l == lineMissingEnd {
			break
		}
		if tool, ok := strings.CutPrefix(l, toolPrefix); ok {
			if tool == string(CompressZstd) || tool == string(CompressGzip) {
				has[tool] = true
			}
			continue
		}
		if name, ok := strings.CutPrefix(l, rootPrefix); ok {
			names = append(names, name)
			continue
		}
		for _, p := range strings.Fields(l) {
			if !wanted[p] {
				return fmt.Errorf("it answered `guix archive --missing` with a path we did not ask about: %q", p)
			}
			if !lacked[p] {
				lacked[p] = true
				missing = append(missing, p)
			}
		}
		if len(names) > maxRootNames {
			s.abort()
			return fmt.Errorf("it listed more than %d entries in its GC roots directories", maxRootNames)
		}
	}
	var subNote string
	if subs := substituteCandidates(missing, s.req.Drv); h.Conf.Substitutes.For(m) && len(subs) > 0 {
		still, got, err := s.substitute(subs)
		if err != nil {
			return err
		}
		missing = slices.DeleteFunc(missing, func(p string) bool { return p != s.req.Drv && !still[p] })
		subNote = s.substituteNote(got)
	}
	comp, note := ChooseCompression(mode, has)
	if note != "" {
		h.note("machine '%s': %s", m.Display(), note)
	}
	s.comp = comp
	verb := "send"
	if len(missing) == 0 {
		verb = "skip"
	}
	header := strings.Join(append([]string{string(comp), verb}, removableRoots(names, s.root)...), " ") + "\n"
	if _, err := io.WriteString(s.stdin, header); err != nil {
		return s.failure("the offload script", "starting the transfer", s.stderr.tails[0])
	}
	if len(missing) == 0 {
		s.stdin.Close()
		if subNote != "" {
			h.note("%s; nothing to send", subNote)
			return s.expect(lineImported, "the offload script", "preparing the build")
		}
		h.note("machine '%s' already has the %d inputs", m.Display(), len(want))
		return s.expect(lineImported, "the offload script", "preparing the build")
	}

	n := len(missing)
	bare := fmt.Sprintf("sending %d store items", n)
	if subNote != "" {
		h.note("%s; sending %d store item%s%s (%s)...", subNote, n, plural(n), h.sizeNote(missing), comp)
	} else {
		h.note("sending %d store item%s to '%s' (%s)...", n, plural(n), m.Display(), comp)
	}
	start := time.Now()
	raw := &countingWriter{}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		s.send(missing, comp, raw)
	}()
	stop := make(chan struct{})
	go h.reportProgress("sending to '"+m.Display()+"'", &s.sent.n, stop)
	l, err := s.line()
	close(stop)
	switch {
	case err != nil:
		<-sent
		if local := s.local(); local != nil {
			return fmt.Errorf("%s: %w", bare, local)
		}
		return s.failure("`guix archive --import`", bare, s.stderr.tails[0])
	case l != lineImported:
		s.abort()
		<-sent
		return s.protocol(l, lineImported)
	}
	<-sent
	if local := s.local(); local != nil {
		// The machine took a bundle cut short for complete: ours is the failure.
		s.abort()
		return fmt.Errorf("%s: %w", bare, local)
	}
	s.learned.sentRaw, s.learned.sendTime = raw.n.Load(), time.Since(start)
	h.note("sent %d store item%s (%s) to '%s' in %.1fs", n, plural(n),
		comp.describe(s.sent.n.Load(), raw.n.Load()), m.Display(), time.Since(start).Seconds())
	return nil
}

// expect reads the next framing line, which must be want; otherwise the session
// failed during step (see failure) or broke the framing.
func (s *session) expect(want, step, what string) error {
	l, err := s.line()
	switch {
	case err != nil:
		return s.failure(step, what, s.stderr.tails[0])
	case l != want:
		s.abort()
		return s.protocol(l, want)
	}
	return nil
}

// send streams the local export of paths (localExporter: without a guix process when
// the local daemon answers), compressed with comp, into the session's stdin and closes it; raw counts the export itself. A failure of the
// export while the session lives is ours (localError); once the session ended, it is
// the consequence of the machine's failure, which the caller reports.
func (s *session) send(paths []string, comp Compression, raw *countingWriter) {
	zw, err := newCompressor(comp, s.sent)
	if err != nil {
		s.setLocal(&localError{fmt.Errorf("%s compressor: %w", comp, err)})
		s.stdin.Close()
		return
	}
	raw.w = s.sent
	if zw != nil {
		raw.w = zw
	}
	exp, err := s.h.localExporter(s.ctx, paths)
	if err == nil {
		err = exp.write(s.ctx, raw)
	}
	if err != nil {
		if !s.ended() && s.ctx.Err() == nil {
			var local *localError
			if !errors.As(err, &local) {
				err = &localError{err}
			}
			s.setLocal(err)
		}
		s.stdin.Close() // no end of stream: the machine sees it cut short
		if zw != nil {
			zw.Close() // fails at once on the closed pipe; frees the encoder
		}
		return
	}
	if zw != nil {
		// The end of the stream; a failure here is the reader's doing (the import
		// ended), and the machine's status reports it.
		zw.Close()
	}
	s.stdin.Close()
}

func (s *session) setLocal(err error) {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	if s.localErr == nil {
		s.localErr = err
	}
}

func (s *session) local() error {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	return s.localErr
}

func uniqueSorted(ps []string) []string {
	sort.Strings(ps)
	out := ps[:0]
	for i, p := range ps {
		if i == 0 || p != ps[i-1] {
			out = append(out, p)
		}
	}
	return out
}
