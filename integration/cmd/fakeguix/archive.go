package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"offload/integration/drv"
	"offload/integration/subst"
	"offload/storeio"
)

// archive implements `guix archive` (guix/scripts/archive.scm).
func (e *env) archive(ctx context.Context, args []string) error {
	o := &options{args: args}
	var action string
	recursive := false
	var paths []string
	for {
		name, isOpt, ok := o.next()
		if !ok {
			break
		}
		if !isOpt {
			paths = append(paths, name)
			continue
		}
		switch optName(name) {
		case "export", "import", "missing", "authorize":
			action = optName(name)
		case "generate-key":
			action = "generate-key" // optional PARAMETERS are accepted and ignored: keys are always Ed25519
		case "r", "recursive":
			recursive = true
		default:
			return fail("%s: unrecognized option", "--"+optName(name))
		}
	}
	switch action {
	case "missing":
		return e.missing()
	case "export":
		return e.export(paths, recursive)
	case "import":
		return e.importBundle()
	case "generate-key":
		return e.generateKey()
	case "authorize":
		return e.authorize()
	}
	return fail("either '--export' or '--import' must be specified")
}

// missing prints the store paths read from stdin (whitespace separated)
// that are not valid.
func (e *env) missing() error {
	mode, args := e.hostile()
	sc := bufio.NewScanner(e.stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	sc.Split(bufio.ScanWords)
	w := bufio.NewWriter(e.stdout)
	for sc.Scan() {
		if p := sc.Text(); !e.store.Valid(p) {
			fmt.Fprintln(w, p)
		}
	}
	if err := sc.Err(); err != nil {
		return fail("%v", err)
	}
	if err := e.missingHostile(w, mode, args); err != nil {
		return err
	}
	return w.Flush()
}

// exportItems returns the items to export in the daemon's order (references
// first), checking that each requested path is valid.
func (e *env) exportItems(paths []string, recursive bool) ([]*drv.Info, error) {
	for _, p := range paths {
		if !e.store.Valid(p) {
			return nil, fail("path `%s' is not valid", p)
		}
	}
	if recursive {
		var err error
		if paths, err = e.store.Closure(paths); err != nil {
			return nil, fail("%v", err)
		}
	}
	order, err := e.store.TopoSort(paths)
	if err != nil {
		return nil, fail("%v", err)
	}
	var infos []*drv.Info
	for _, p := range order {
		info, err := e.store.Info(p)
		if err != nil {
			return nil, fail("%v", err)
		}
		infos = append(infos, info)
	}
	return infos, nil
}

func (e *env) signingKey() (*storeio.SecretKey, error) {
	b, err := os.ReadFile(e.confFile("signing-key.sec"))
	if err != nil {
		return nil, fail("cannot read signing key: %v", err)
	}
	k, err := storeio.ParseSecretKey(b)
	if err != nil {
		return nil, fail("cannot read signing key %s: %v", e.confFile("signing-key.sec"), err)
	}
	return k, nil
}

// export writes a signed bundle of paths (and their closure with -r) on
// stdout, as `guix archive --export` does.
func (e *env) export(paths []string, recursive bool) error {
	infos, err := e.exportItems(paths, recursive)
	if err != nil {
		return err
	}
	key, err := e.signingKey()
	if err != nil {
		return err
	}
	if mode, _ := e.hostile(); mode != "" && !strings.HasPrefix(mode, "missing-") {
		return e.exportHostile(mode, infos, key)
	}
	bw := storeio.NewBundleWriter(e.stdout, key)
	for _, info := range infos {
		// The daemon says this for each item it exports.
		fmt.Fprintf(e.stderr, "exporting path `%s'\n", info.Path)
		real, _ := e.store.Real(info.Path)
		err := bw.Add(real, storeio.ItemInfo{Path: info.Path, References: info.References, Deriver: info.Deriver})
		if err != nil {
			return fail("export %s: %v", info.Path, err)
		}
	}
	if err := bw.Close(); err != nil {
		return fail("export: %v", err)
	}
	return nil
}

func (e *env) loadACL() (*storeio.ACL, error) {
	acl, err := subst.LoadACL(e.conf)
	if err != nil {
		return nil, fail("%v", err)
	}
	return acl, nil
}

// importBundle restores a bundle from stdin into the store, every item
// signed by a key of the ACL, and registers the items. On refusal the items
// completed before it stay (they were verified, as with the daemon), the
// refused one leaves nothing behind, and the exit status is 1.
func (e *env) importBundle() error {
	acl, err := e.loadACL()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(e.store.Physical, 0o755); err != nil {
		return fail("%v", err)
	}
	items, ierr := storeio.ImportBundle(e.stdin, storeio.ImportOptions{
		StoreDir: e.store.Logical, RealDir: e.store.Physical, ACL: acl,
	})
	for _, it := range items {
		if err := e.store.Register(drv.Info{Path: it.Path, References: it.References, Deriver: it.Deriver}); err != nil && ierr == nil {
			ierr = err
		}
	}
	if ierr != nil {
		return fail("%s", subst.ImportMessage(ierr))
	}
	return nil
}

// generateKey writes signing-key.sec and signing-key.pub, refusing to
// overwrite an existing pair.
func (e *env) generateKey() error {
	pub, sec := e.confFile("signing-key.pub"), e.confFile("signing-key.sec")
	for _, f := range []string{pub, sec} {
		if _, err := os.Stat(f); err == nil {
			return fail("key pair exists under '%s'; remove it first", e.conf)
		}
	}
	k, err := storeio.GenerateKey()
	if err != nil {
		return fail("key generation failed: %v", err)
	}
	if err := os.MkdirAll(e.conf, 0o755); err != nil {
		return fail("%v", err)
	}
	if err := drv.WriteFileAtomic(pub, k.Public().MarshalText(), 0o444); err != nil {
		return fail("%v", err)
	}
	if err := drv.WriteFileAtomic(sec, k.MarshalText(), 0o400); err != nil {
		return fail("%v", err)
	}
	return nil
}

// authorize adds the public key read on stdin to the ACL.
func (e *env) authorize() error {
	b, err := io.ReadAll(e.stdin)
	if err != nil {
		return fail("%v", err)
	}
	k, err := storeio.ParsePublicKey(b)
	if err != nil {
		return fail("failed to read public key: %v", err)
	}
	acl, err := e.loadACL()
	if err != nil {
		return err
	}
	if !acl.Authorized(k) {
		acl.Add(k)
	}
	if err := os.MkdirAll(e.conf, 0o755); err != nil {
		return fail("%v", err)
	}
	if err := drv.WriteFileAtomic(e.confFile("acl"), acl.MarshalText(), 0o644); err != nil {
		return fail("%v", err)
	}
	return nil
}

// hostile returns the hostile mode and its arguments: the words of
// $FAKEGUIX_HOSTILE, or else of the content of the file named by
// $FAKEGUIX_HOSTILE_FILE (so that a test can turn a build machine hostile
// while its sshd, and so its environment, stays the same). Modes named
// "missing-..." change `archive --missing`, the others `archive --export`.
func (e *env) hostile() (mode string, args []string) {
	text := e.getenv("FAKEGUIX_HOSTILE")
	if text == "" {
		if f := e.getenv("FAKEGUIX_HOSTILE_FILE"); f != "" {
			b, _ := os.ReadFile(f)
			text = string(b)
		}
	}
	words := strings.Fields(text)
	if len(words) == 0 {
		return "", nil
	}
	return words[0], words[1:]
}
