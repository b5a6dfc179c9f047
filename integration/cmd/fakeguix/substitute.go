package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"offload/integration/drv"
	"offload/storeio"
)

// Substitutes, for `guix build ITEM...` of plain store items (no .drv): the daemon
// fetches each item that is not valid from a substitute server. Here the server is the
// directory $FAKEGUIX_SUBSTITUTES, which holds one file per item, named by the item's
// hash part: a signed one-item export bundle (the nar with the item's references,
// deriver and signature, what a narinfo and its nar give the daemon). An item whose
// file exists is substitutable; installing it verifies the bundle as `guix archive
// --import` does (every byte, and a signature by a key in the machine's ACL), so a
// truncated or foreign-signed file is a substitute that fails to download.
//
// As real Guix (checked against a real guix-daemon), `guix build` of plain items lists
// nothing: build-notifier (guix/ui.scm) shows derivations only. One liberty: real Guix
// ignores a substitute signed by an unauthorized key rather than failing it; here it
// fails. (Real `guix build --dry-run` of plain items is not dry: the daemon fetches
// them; here it does nothing. offload never asks for that.)

// substituteFile is where the substitute of item p lives, or "" with no substitutes.
func (e *env) substituteFile(p string) string {
	dir := e.getenv("FAKEGUIX_SUBSTITUTES")
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, filepath.Base(p)[:32])
}

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
	file := e.substituteFile(p)
	if _, err := os.Stat(file); file == "" || err != nil {
		return fmt.Errorf("path `%s' is required, but there is no substituter that can build it", p)
	}
	if opt.verbosity >= 1 {
		fmt.Fprintf(e.stderr, "substituting %s...\n", p)
	}
	failed := func(err error) error {
		fmt.Fprintf(e.stderr, "guix substitute: error: %s\n", importMessage(err))
		return fmt.Errorf("substitution of %s failed", p)
	}
	acl, err := e.loadACL()
	if err != nil {
		return failed(err)
	}
	f, err := os.Open(file)
	if err != nil {
		return failed(err)
	}
	defer f.Close()
	got, err := storeio.ImportBundle(f, storeio.ImportOptions{
		StoreDir: e.store.Logical, RealDir: e.store.Physical, ACL: acl, Allowed: []string{p},
	})
	if err == nil && (len(got) != 1 || got[0].Path != p) {
		err = fmt.Errorf("the substitute of %s holds something else", p)
	}
	if err != nil {
		return failed(err)
	}
	if err := e.store.Register(drv.Info{Path: p, References: got[0].References, Deriver: got[0].Deriver}); err != nil {
		return failed(err)
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
