package main

import (
	"fmt"
	"strings"

	"offload/integration/subst"
)

// Substitutes, for `guix build ITEM...` of plain store items (no .drv): the daemon
// fetches each item that is not valid from a substitute server. Here the server is the
// directory $FAKEGUIX_SUBSTITUTES (offload/integration/subst, which workerd's
// BuildPaths fetches from too): one signed one-item export bundle per item, verified
// on install against the machine's ACL, so that a truncated or foreign-signed file is
// a substitute that fails to download.
//
// As real Guix (checked against a real guix-daemon), `guix build` of plain items lists
// nothing: build-notifier (guix/ui.scm) shows derivations only. One liberty: real Guix
// ignores a substitute signed by an unauthorized key rather than failing it; here it
// fails. (Real `guix build --dry-run` of plain items is not dry: the daemon fetches
// them; here it does nothing. offload never asks for that.)

// buildItems implements `guix build [--dry-run] [--keep-going] ITEM...` of plain items.
func (e *env) buildItems(items []string, opt buildOptions) error {
	if opt.dryRun {
		return nil
	}
	var failed []string
	for _, p := range items {
		if e.store.Valid(p) {
			continue
		}
		if err := e.substitute(p, opt); err != nil {
			if opt.verbosity >= 1 {
				fmt.Fprintln(e.stderr, err)
			}
			failed = append(failed, p)
			if !opt.keepGoing {
				break
			}
		}
	}
	if len(failed) > 0 {
		return fail("build of %s failed", showPaths(failed))
	}
	return nil
}

// substitute installs item p from its substitute, verified, and registers it; its
// error is the line guix build shows for the failure (guix/status.scm).
func (e *env) substitute(p string, opt buildOptions) error {
	server := subst.Server(e.getenv("FAKEGUIX_SUBSTITUTES"))
	if !server.Has(p) {
		return fmt.Errorf("path `%s' is required, but there is no substituter that can build it", p)
	}
	if opt.verbosity >= 1 {
		fmt.Fprintf(e.stderr, "substituting %s...\n", p)
	}
	acl, err := e.loadACL()
	if err == nil {
		_, err = server.Install(e.store, acl, p)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, subst.ErrorLine(err))
		return fmt.Errorf("substitution of %s failed", p)
	}
	return nil
}

// showPaths words paths as the daemon's showPaths does: "`a', `b'".
func showPaths(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = "`" + p + "'"
	}
	return strings.Join(q, ", ")
}
