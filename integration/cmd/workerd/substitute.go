package main

import (
	"context"
	"fmt"

	"offload/integration/subst"
)

// Substitutes, for BuildPaths of plain items (build.go), when the client's SetOptions
// asked for them (useSubstitutes) and the daemon has a substitute server: the directory
// $FAKEGUIX_SUBSTITUTES, which the machine's `guix build` fetches from too
// (offload/integration/subst). This is the real daemon's SubstitutionGoal
// (nix/libstore/build.cc), one goal at a time in the order asked.
//
// An invalid item with a substitute is fetched after its references, each substituted
// first as a goal of its own (the real daemon's closure invariant): the item's fetch
// verifies it against the daemon's ACL, installs it all or nothing, and registers it
// with the references and deriver of its substitute. Stale bytes at its path (an
// unregistered leftover) are removed first, as the real daemon does, so a failed fetch
// leaves no trace of the item in the store. A goal ends in one of the real daemon's
// exit codes:
//
//   - success: valid already, or fetched;
//   - no substituter: the item has no substitute. Not a failure (the real daemon's
//     "hack": a derivation that needs it would build it); the item stays invalid and
//     the message is a debug one;
//   - incomplete closure: a reference of it could not be substituted for want of a
//     substitute. Not a failure either; the item is not fetched and stays invalid;
//   - failed: the fetch failed (a truncated, corrupt or foreign-signed substitute), or
//     a reference's did. The item stays invalid. BuildPaths then answers "build of
//     `P', ... failed", status 1, naming the requested items that failed, which is what
//     offload's substituteOnDaemon takes for "could not fetch every substitute" before
//     it asks again what the machine lacks.
//
// With keepGoing every requested item is tried; without it the first failed one ends
// the request (and a failed reference ends its item's wait for the others).
//
// Messages (STDERR_NEXT), worded as the real daemon's: "fetching path `P'..." before a
// fetch (lvlInfo); the substituter's own error line (subst.ErrorLine) when verbosity ≥
// buildVerbosity, as the daemon forwards the substituter's standard error; after a
// failed fetch "fetching path `P' (empty status)" (lvlInfo: the real `guix substitute`
// dies on the error without a status line); after a successful one "substitution of
// path `P' succeeded" (lvlChatty); "path `P' is required, but there is no substituter
// that can build it" and "some references of path `P' could not be realised" (lvlDebug);
// with printBuildTrace "@ substituter-started P substitute", "@ substituter-succeeded
// P", "@ substituter-failed P  MSG" (the status is empty). Liberties: no download
// progress; a substitute signed by an unauthorized key fails (real Guix ignores it, as
// if there were none), as with fakeguix.

// substResult is a substitution goal's end (the real Goal::ExitCode).
type substResult int

const (
	substOK         substResult = iota // ecSuccess
	substFailed                        // ecFailed
	substNone                          // ecNoSubstituters
	substIncomplete                    // ecIncompleteClosure
)

// Message levels of the real daemon (nix/libutil/types.hh).
const (
	lvlInfo   = 1
	lvlChatty = 3
	lvlDebug  = 4
)

// substituting tells whether BuildPaths fetches invalid plain items.
func (w *worker) substituting() bool { return w.set.useSubstitutes && w.d.substitutes != "" }

// substitute runs the goal of p: valid already, or fetched after its references. goals
// holds the ends of this request's goals, so that each path is tried once (the real
// worker's goal cache).
func (w *worker) substitute(ctx context.Context, p string, goals map[string]substResult) (substResult, error) {
	if r, ok := goals[p]; ok {
		return r, nil
	}
	// Until it ends, a goal met again (a reference cycle, which no store can hold)
	// counts as failed rather than looping.
	goals[p] = substFailed
	r, err := w.substituteGoal(ctx, p, goals)
	goals[p] = r
	return r, err
}

func (w *worker) substituteGoal(ctx context.Context, p string, goals map[string]substResult) (substResult, error) {
	s, server := w.d.store, w.d.substitutes
	if err := w.roots.add(p); err != nil {
		return substFailed, errorf("%v", err)
	}
	if s.Valid(p) {
		return substOK, nil
	}
	if !server.Has(p) {
		w.msg(lvlDebug, "path `%s' is required, but there is no substituter that can build it\n", p)
		return substNone, nil
	}
	// The narinfo's references. One too broken to read has none to wait for: its fetch
	// fails below.
	info, _ := server.Info(p)
	var failed, none int
	for _, r := range info.References {
		if r == p {
			continue
		}
		if ctx.Err() != nil {
			return substFailed, errClosed
		}
		res, err := w.substitute(ctx, r, goals)
		if err != nil {
			return substFailed, err
		}
		if res != substOK {
			failed++
		}
		if res == substNone || res == substIncomplete {
			none++
		}
		if res == substFailed && !w.set.keepGoing {
			break
		}
	}
	if failed > 0 {
		w.msg(lvlDebug, "some references of path `%s' could not be realised\n", p)
		if none > 0 {
			return substIncomplete, nil
		}
		return substFailed, nil
	}
	return w.fetch(p)
}

// fetch installs p from its substitute, under the daemon's substitution lock (the real
// daemon's lock on the output path): another connection may be fetching it too.
func (w *worker) fetch(p string) (substResult, error) {
	w.d.substMu.Lock()
	defer w.d.substMu.Unlock()
	s := w.d.store
	if s.Valid(p) {
		return substOK, nil // fetched meanwhile
	}
	w.msg(lvlInfo, "fetching path `%s'...\n", p)
	if w.set.printBuildTrace {
		w.next(fmt.Sprintf("@ substituter-started %s substitute\n", p))
	}
	real, _ := s.Real(p)
	err := removeAll(real) // stale bytes, never registered
	acl, aclErr := subst.LoadACL(w.d.conf)
	if err == nil {
		err = aclErr
	}
	if err == nil {
		_, err = w.d.substitutes.Install(s, acl, p)
	}
	if err != nil {
		if w.set.verbosity >= w.set.buildVerbosity {
			w.next(subst.ErrorLine(err) + "\n")
		}
		msg := fmt.Sprintf("fetching path `%s' (empty status)", p)
		w.msg(lvlInfo, "%s\n", msg)
		if w.set.printBuildTrace {
			w.next(fmt.Sprintf("@ substituter-failed %s  %s\n", p, msg))
		}
		return substFailed, nil
	}
	w.msg(lvlChatty, "substitution of path `%s' succeeded\n", p)
	if w.set.printBuildTrace {
		w.next(fmt.Sprintf("@ substituter-succeeded %s\n", p))
	}
	return substOK, nil
}
