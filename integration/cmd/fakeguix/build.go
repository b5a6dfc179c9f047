package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"offload/integration/builder"
	"offload/integration/drv"
)

// buildOptions are the `guix build` options the offload flow uses.
type buildOptions struct {
	maxSilent  int // seconds, 0 = none
	timeout    int // seconds, 0 = none
	verbosity  int
	drvOnly    bool // -d
	keepFailed bool // -K
	roots      []string
	dryRun     bool // -n
	keepGoing  bool // -k
}

// builder returns the build engine over this invocation's store, printing on its
// stderr.
func (e *env) builder() *builder.Builder { return &builder.Builder{Store: e.store, Stderr: e.stderr} }

// engine returns the options the build engine reads.
func (o buildOptions) engine() builder.Options {
	return builder.Options{MaxSilent: o.maxSilent, Timeout: o.timeout, Verbosity: o.verbosity, KeepFailed: o.keepFailed}
}

// build implements `guix build DRV...` (guix/scripts/build.scm) with the
// daemon's side done here: the builder runs for real.
//
// What is printed follows guix/status.scm at each --verbosity (default 3,
// as `guix build`): level 0 nothing; level 1 "building DRV...", the daemon's
// own lines ("builder for ... failed with exit code N", "... timed out after
// N seconds") and "build of DRV failed"; level 2 and up also the builder's
// output and "successfully built DRV". Real `guix build` never shows the
// daemon's raw "@ build-started" trace lines: its status reporter consumes
// them. Failures and timeouts both exit 1 ("guix build: error: build of
// `DRV' failed"), as real `guix build` does; only the messages tell a
// timeout apart.
func (e *env) build(ctx context.Context, args []string) error {
	opt := buildOptions{verbosity: 3}
	o := &options{args: args}
	var drvPaths []string
	for {
		name, isOpt, ok := o.next()
		if !ok {
			break
		}
		if !isOpt {
			drvPaths = append(drvPaths, name)
			continue
		}
		var err error
		var v string
		switch optName(name) {
		case "max-silent-time":
			_, v, err = o.value(name)
			if err == nil {
				opt.maxSilent, err = seconds(v)
			}
		case "timeout":
			_, v, err = o.value(name)
			if err == nil {
				opt.timeout, err = seconds(v)
			}
		case "v", "verbosity":
			_, v, err = o.value(name)
			if err == nil {
				opt.verbosity, err = seconds(v)
			}
		case "q", "quiet":
			opt.verbosity = 0
		case "r", "root":
			_, v, err = o.value(name)
			opt.roots = append(opt.roots, v)
		case "c", "cores", "M", "max-jobs":
			_, _, err = o.value(name)
		case "d", "derivations":
			opt.drvOnly = true
		case "K", "keep-failed":
			opt.keepFailed = true
		case "n", "dry-run":
			opt.dryRun = true
		case "k", "keep-going":
			opt.keepGoing = true
		case "no-grafts", "no-substitutes", "no-offload", "fallback":
		default:
			return fail("%s: unrecognized option", "--"+optName(name))
		}
		if err != nil {
			return err
		}
	}
	// Plain store items are substituted (substitute.go), derivations built.
	var items []string
	drvPaths = slices.DeleteFunc(drvPaths, func(p string) bool {
		item := !strings.HasSuffix(p, ".drv") && e.store.CheckPath(p) == nil
		if item {
			items = append(items, p)
		}
		return item
	})
	if len(items) > 0 {
		if err := e.buildItems(items, opt); err != nil || len(drvPaths) == 0 {
			return err
		}
	}
	if len(drvPaths) == 0 {
		return fail("no arguments specified, nothing to do")
	}
	var drvs []*drv.Derivation
	for _, p := range drvPaths {
		if !strings.HasSuffix(p, ".drv") || e.store.CheckPath(p) != nil {
			return fail("%s: unknown package", p)
		}
		if !e.store.Valid(p) {
			return fail("path `%s' is not valid", p)
		}
		d, err := e.store.Read(p)
		if err != nil {
			return fail("%v", err)
		}
		drvs = append(drvs, d)
	}
	if opt.drvOnly {
		for _, d := range drvs {
			fmt.Fprintln(e.stdout, d.Path)
		}
		return e.registerRoots(drvs, opt.roots, func(d *drv.Derivation) []string { return []string{d.Path} })
	}
	var todo []string
	for _, d := range drvs {
		if err := e.builder().ToBuild(d, &todo, map[string]bool{}); err != nil {
			return err
		}
	}
	if opt.dryRun {
		if len(todo) > 0 && opt.verbosity >= 1 {
			fmt.Fprintf(e.stderr, "The following derivation%s would be built:\n", map[bool]string{true: "", false: "s"}[len(todo) == 1])
			for _, p := range todo {
				fmt.Fprintf(e.stderr, "  %s\n", p)
			}
		}
		return nil
	}
	if len(todo) > 0 && opt.verbosity >= 1 {
		if len(todo) == 1 {
			fmt.Fprintln(e.stderr, "The following derivation will be built:")
		} else {
			fmt.Fprintln(e.stderr, "The following derivations will be built:")
		}
		for _, p := range todo {
			fmt.Fprintf(e.stderr, "   %s\n", p)
		}
	}
	for _, d := range drvs {
		if err := e.builder().Realise(ctx, d, opt.engine()); err != nil {
			if errors.Is(err, builder.ErrFailed) {
				return fail("build of `%s' failed", d.Path)
			}
			return err
		}
	}
	for _, d := range drvs {
		for _, p := range d.OutputPaths() {
			fmt.Fprintln(e.stdout, p)
		}
	}
	return e.registerRoots(drvs, opt.roots, (*drv.Derivation).OutputPaths)
}

func seconds(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fail("%s: invalid number", v)
	}
	return n, nil
}

// registerRoots makes each root (paired with the derivation at the same
// position, as guix build does) an indirect GC root: a symlink ROOT -> item,
// or ROOT-0, ROOT-1... for several items. A relative ROOT is relative to the
// working directory, whose parent must exist.
func (e *env) registerRoots(drvs []*drv.Derivation, roots []string, items func(*drv.Derivation) []string) error {
	for i, root := range roots {
		if i >= len(drvs) {
			break
		}
		if !filepath.IsAbs(root) {
			dir, err := filepath.Abs(filepath.Dir(root))
			if err == nil {
				dir, err = filepath.EvalSymlinks(dir)
			}
			if err != nil {
				return fail("failed to create GC root `%s': %s", root, strerror(err))
			}
			root = filepath.Join(dir, filepath.Base(root))
		}
		paths := items(drvs[i])
		links := []string{root}
		if len(paths) > 1 {
			links = nil
			for j := range paths {
				links = append(links, fmt.Sprintf("%s-%d", root, j))
			}
		}
		for j, link := range links {
			if err := os.Symlink(paths[j], link); err != nil {
				return fail("failed to create GC root `%s': %s", link, strerror(err))
			}
			auto := filepath.Join(filepath.Dir(e.store.DB), "gcroots", "auto")
			if err := os.MkdirAll(auto, 0o755); err == nil {
				name := drv.StorePath("", "root:"+link, "r")
				os.Symlink(link, filepath.Join(auto, filepath.Base(name)[:32]))
			}
		}
	}
	return nil
}

// strerror words err like C's strerror ("No such file or directory").
func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return capitalize(errno.Error())
	}
	return err.Error()
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
