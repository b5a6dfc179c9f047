package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"offload/integration/drv"
)

// opAddToStore is §4.5b for recursive sha256 (what a client re-creating a source item
// sends): name, the obsolete fixed flag, the recursive flag, the hash algorithm, then
// the nar itself inline, read before the work starts (the real daemon holds it in
// memory; this one spools it). The path is the source path of the nar's hash; the item
// has no references.
func opAddToStore(w *worker, _ context.Context) (func(writer), error) {
	name, err := w.in.str()
	if err != nil {
		return nil, err
	}
	fixed, err := w.in.int()
	if err != nil {
		return nil, err
	}
	recursive, err := w.in.int()
	if err != nil {
		return nil, err
	}
	algo, err := w.in.str()
	if err != nil {
		return nil, err
	}
	if fixed != 1 || recursive != 1 || algo != "sha256" {
		// Flat files and other hashes: not needed by a hook, not served.
		return nil, &opError{msg: fmt.Sprintf("workerd: AddToStore serves recursive sha256 only, not fixed=%d recursive=%d %q", fixed, recursive, algo), status: 1, close: true}
	}
	spool, err := os.CreateTemp("", "workerd-add-")
	if err != nil {
		return nil, errorf("%v", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	h := sha256.New()
	if err := copyNar(&exact{r: w.in.r, tee: io.MultiWriter(h, spool)}); err != nil {
		// A malformed nar: the connection is out of step.
		return nil, &opError{msg: err.Error(), status: 1, close: true}
	}
	w.startWork(true)
	s := w.d.store
	p := drv.StorePath(s.Logical, "source:sha256:"+hex.EncodeToString(h.Sum(nil))+":"+s.Logical+":"+name, name)
	if err := s.CheckPath(p); err != nil {
		return nil, errorf("invalid name `%s'", name)
	}
	if err := w.roots.add(p); err != nil {
		return nil, errorf("%v", err)
	}
	if s.Valid(p) {
		return func(wr writer) { wr.str(p) }, nil
	}
	if err := w.install(spool, drv.Info{Path: p}); err != nil {
		return nil, err
	}
	return func(wr writer) { wr.str(p) }, nil
}
