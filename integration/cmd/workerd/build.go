package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"offload/integration/builder"
)

// opBuildPaths is §4.8: each element a .drv (all its outputs), DRV!OUT, or a plain
// item. Derivations are built with integration/builder, their input derivations
// first; the builder's output is forwarded as STDERR_NEXT as it comes when verbosity ≥
// buildVerbosity; trace lines go out when printBuildTrace is set. A failure answers
// "build of `D' failed" with status 101 if a time limit ended it, 100 if a builder
// failed, 1 otherwise. An invalid plain item is fetched from its substitute when the
// client asked for substitutes and the daemon has a substitute server (substitute.go);
// a failed fetch fails the item like a build, with status 1. Like the real daemon, an
// invalid plain item that has no substitute (or without substitutes) is not a failure:
// the reply is 1 and the item stays invalid. Check mode (2) builds like normal mode:
// outputs already valid are not rebuilt.
func opBuildPaths(w *worker, ctx context.Context) (func(writer), error) {
	paths, err := w.in.strs()
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		drvPath, _, _ := strings.Cut(p, "!")
		if !w.isStorePath(drvPath) {
			return nil, w.notInStore(p)
		}
	}
	mode, err := w.in.int()
	if err != nil {
		return nil, err
	}
	if mode == 1 && !w.trusted {
		return nil, errorf("repairing is a privileged operation")
	}
	w.startWork(true)
	s := w.d.store
	b := &builder.Builder{Store: s, Stderr: messageWriter{w}}
	opt := builder.Options{MaxSilent: w.set.maxSilent, Timeout: w.set.timeout, Verbosity: int(w.set.verbosity),
		BuildLog: io.Discard}
	if w.set.verbosity >= w.set.buildVerbosity {
		opt.BuildLog = messageWriter{w}
	}
	if w.set.printBuildTrace {
		opt.Trace = func(line string) { w.next(line + "\n") }
	}
	var failed []string
	status := uint64(1)
	goals := map[string]substResult{} // the substitution goals' ends
	for _, p := range paths {
		if ctx.Err() != nil {
			return nil, errClosed
		}
		drvPath, _, _ := strings.Cut(p, "!")
		if err := w.roots.add(drvPath); err != nil {
			return nil, errorf("%v", err)
		}
		if !strings.HasSuffix(drvPath, ".drv") {
			if !w.substituting() {
				continue // valid, or the quirk above
			}
			res, err := w.substitute(ctx, p, goals)
			if err != nil {
				return nil, err
			}
			if ctx.Err() != nil {
				return nil, errClosed
			}
			if res == substFailed {
				failed = append(failed, p)
				if !w.set.keepGoing {
					break
				}
			}
			continue
		}
		if !s.Valid(drvPath) {
			return nil, errorf("path `%s' is not valid", drvPath)
		}
		d, err := s.Read(drvPath)
		if err != nil {
			return nil, errorf("%v", err)
		}
		for _, o := range d.OutputPaths() {
			w.roots.add(o)
		}
		err = b.Realise(ctx, d, opt)
		if ctx.Err() != nil {
			return nil, errClosed // the client left: the build was interrupted
		}
		var f *builder.Failure
		switch {
		case err == nil:
			continue
		case errors.As(err, &f):
			if f.Timeout {
				status = 101
			} else if status != 101 {
				status = 100
			}
		default:
			return nil, errorf("%v", err)
		}
		failed = append(failed, drvPath)
		if !w.set.keepGoing {
			break
		}
	}
	if len(failed) > 0 {
		q := make([]string, len(failed))
		for i, p := range failed {
			q[i] = "`" + p + "'"
		}
		return nil, &opError{msg: fmt.Sprintf("build of %s failed", strings.Join(q, ", ")), status: status}
	}
	return func(wr writer) { wr.int(1) }, nil
}

// messageWriter sends what is written to it as STDERR_NEXT.
type messageWriter struct{ w *worker }

func (m messageWriter) Write(p []byte) (int, error) {
	m.w.next(string(p))
	return len(p), nil
}
