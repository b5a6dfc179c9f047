package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"offload/integration/drv"
	"offload/storeio"
)

// handler serves one request: it reads the arguments, calls startWork, works, and
// returns what to write after STDERR_LAST (nil: nothing).
type handler func(w *worker, ctx context.Context) (reply func(writer), err error)

// ops are the requests served (WORKER-PROTOCOL.md §4); any other opcode gets "invalid
// operation N" and the connection closes, as an unknown one does with the real daemon.
// Not served, though the real daemon has them: QueryReferrers, EnsurePath,
// AddIndirectRoot, FindRoots, the derivation queries, the substitute queries, GC.
// BuildPaths fetches substitutes of plain items (substitute.go).
var ops = map[uint64]handler{
	1:  opIsValidPath,
	5:  opQueryReferences,
	7:  opAddToStore,
	8:  opAddTextToStore,
	9:  opBuildPaths,
	11: opAddTempRoot,
	16: opExportPath,
	18: opQueryDeriver,
	19: opSetOptions,
	26: opQueryPathInfo,
	27: opImportPaths,
	31: opQueryValidPaths,
}

// isStorePath is the daemon's own check (assertStorePath): the store prefix and no
// further '/'. It is weaker than a well-formed path: such a path may still be invalid.
func (w *worker) isStorePath(p string) bool {
	rest, ok := strings.CutPrefix(p, w.d.store.Logical+"/")
	return ok && rest != "" && !strings.Contains(rest, "/")
}

func (w *worker) notInStore(p string) error { return errorf("path `%s' is not in the store", p) }

// storePath reads a store path argument (readStorePath): a bad one is an error before
// work starts, so it closes the connection.
func (w *worker) storePath() (string, error) {
	p, err := w.in.str()
	if err == nil && !w.isStorePath(p) {
		err = w.notInStore(p)
	}
	return p, err
}

func (w *worker) storePaths() ([]string, error) {
	ps, err := w.in.strs()
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if !w.isStorePath(p) {
			return nil, w.notInStore(p)
		}
	}
	return ps, nil
}

func (w *worker) pathInfo(p string) (*drv.Info, error) {
	info, err := w.d.store.Info(p)
	if errors.Is(err, drv.ErrNotValid) {
		return nil, errorf("path `%s' is not valid", p)
	}
	if err != nil {
		return nil, errorf("%v", err)
	}
	return info, nil
}

func opIsValidPath(w *worker, _ context.Context) (func(writer), error) {
	p, err := w.in.str()
	if err != nil {
		return nil, err
	}
	w.startWork(true)
	// Checked after startWork, on purpose in the real daemon: the connection survives.
	if !w.isStorePath(p) {
		return nil, w.notInStore(p)
	}
	valid := w.d.store.Valid(p)
	return func(wr writer) { wr.bool(valid) }, nil
}

func opQueryValidPaths(w *worker, _ context.Context) (func(writer), error) {
	ps, err := w.storePaths()
	if err != nil {
		return nil, err
	}
	w.startWork(true)
	var valid []string
	for _, p := range ps {
		if w.d.store.Valid(p) {
			valid = append(valid, p)
		}
	}
	return func(wr writer) { wr.strs(valid) }, nil
}

func opQueryReferences(w *worker, _ context.Context) (func(writer), error) {
	p, err := w.storePath()
	if err != nil {
		return nil, err
	}
	w.startWork(true)
	info, err := w.pathInfo(p)
	if err != nil {
		return nil, err
	}
	return func(wr writer) { wr.strs(info.References) }, nil
}

func opQueryDeriver(w *worker, _ context.Context) (func(writer), error) {
	p, err := w.storePath()
	if err != nil {
		return nil, err
	}
	w.startWork(true)
	info, err := w.pathInfo(p)
	if err != nil {
		return nil, err
	}
	return func(wr writer) { wr.str(info.Deriver) }, nil
}

// opQueryPathInfo answers the five fields of §4.3. The fake store records neither
// hash, size nor time: the nar is hashed on each request, the time is the db entry's.
func opQueryPathInfo(w *worker, _ context.Context) (func(writer), error) {
	p, err := w.storePath()
	if err != nil {
		return nil, err
	}
	w.startWork(true)
	info, err := w.pathInfo(p)
	if err != nil {
		return nil, err
	}
	real, _ := w.d.store.Real(p)
	h := sha256.New()
	cw := &countWriter{w: h}
	if err := storeio.Dump(cw, real); err != nil {
		return nil, errorf("%v", err)
	}
	narHash := hex.EncodeToString(h.Sum(nil))
	var regTime uint64
	if fi, err := os.Stat(w.d.store.DB + "/" + baseName(p)); err == nil {
		regTime = uint64(fi.ModTime().Unix()) & 0xffffffff
	}
	return func(wr writer) {
		wr.str(info.Deriver)
		wr.str(narHash)
		wr.strs(info.References)
		wr.int(regTime)
		wr.int(uint64(cw.n))
	}, nil
}

func baseName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// opAddTextToStore is §4.4: the path is computed from the text and the references,
// which must be valid; a .drv's outputs must be the ones this store gives it.
func opAddTextToStore(w *worker, _ context.Context) (func(writer), error) {
	name, err := w.in.str()
	if err != nil {
		return nil, err
	}
	content, err := w.in.str()
	if err != nil {
		return nil, err
	}
	refs, err := w.storePaths()
	if err != nil {
		return nil, err
	}
	w.startWork(true)
	s := w.d.store
	refs = uniqueSorted(refs)
	sum := sha256.Sum256([]byte(content))
	typ := "text"
	for _, r := range refs {
		typ += ":" + r
	}
	p := drv.StorePath(s.Logical, typ+":sha256:"+hex.EncodeToString(sum[:])+":"+s.Logical+":"+name, name)
	if err := s.CheckPath(p); err != nil {
		return nil, errorf("invalid name `%s'", name)
	}
	if err := w.roots.add(p); err != nil {
		return nil, errorf("%v", err)
	}
	if s.Valid(p) {
		return func(wr writer) { wr.str(p) }, nil
	}
	for _, r := range refs {
		if !s.Valid(r) {
			return nil, errorf("path ‘%s’ is not valid", r)
		}
	}
	if strings.HasSuffix(name, ".drv") {
		d, err := drv.Parse(p, []byte(content))
		if err != nil {
			return nil, errorf("%v", err)
		}
		want := s.OutputPathsOf(d, strings.TrimSuffix(name, ".drv"))
		for _, o := range d.Outputs {
			if o.Path != want[o.Name] {
				return nil, errorf("derivation `%s' has incorrect output `%s', should be `%s'", p, o.Path, want[o.Name])
			}
		}
	}
	real, _ := s.Real(p)
	if err := drv.WriteFileAtomic(real, []byte(content), 0o444); err != nil {
		return nil, errorf("%v", err)
	}
	if err := s.Register(drv.Info{Path: p, References: refs}); err != nil {
		return nil, errorf("%v", err)
	}
	return func(wr writer) { wr.str(p) }, nil
}

func uniqueSorted(ss []string) []string {
	out := append([]string(nil), ss...)
	sort.Strings(out)
	j := 0
	for i, s := range out {
		if i == 0 || s != out[i-1] {
			out[j] = s
			j++
		}
	}
	return out[:j]
}

func opAddTempRoot(w *worker, _ context.Context) (func(writer), error) {
	p, err := w.storePath()
	if err != nil {
		return nil, err
	}
	w.startWork(true)
	if err := w.roots.add(p); err != nil {
		return nil, errorf("%v", err)
	}
	return func(wr writer) { wr.int(1) }, nil
}

// opSetOptions is §4.10: the fields the client's minor version has, then the
// overrides, whose values are checked before work starts (a bad one closes).
func opSetOptions(w *worker, _ context.Context) (func(writer), error) {
	var fields []string
	fields = append(fields, "keepFailed", "keepGoing", "tryFallback", "verbosity")
	if w.minor < 0x61 {
		fields = append(fields, "maxBuildJobs", "maxSilentTime")
	}
	if w.minor >= 2 {
		fields = append(fields, "useBuildHook")
	}
	if w.minor >= 4 {
		fields = append(fields, "buildVerbosity", "logType", "printBuildTrace")
	}
	if w.minor >= 6 && w.minor < 0x61 {
		fields = append(fields, "buildCores")
	}
	if w.minor >= 10 {
		fields = append(fields, "useSubstitutes")
	}
	set := w.set
	for _, f := range fields {
		v, err := w.in.int()
		if err != nil {
			return nil, err
		}
		switch f {
		case "keepGoing":
			set.keepGoing = v != 0
		case "verbosity":
			set.verbosity = v
		case "buildVerbosity":
			set.buildVerbosity = v
		case "printBuildTrace":
			set.printBuildTrace = v != 0
		case "useSubstitutes":
			set.useSubstitutes = v != 0
		case "maxSilentTime":
			set.maxSilent = int(v)
		}
	}
	if w.minor >= 12 {
		n, err := w.in.int()
		if err != nil {
			return nil, err
		}
		for range n {
			name, err := w.in.str()
			if err != nil {
				return nil, err
			}
			value, err := w.in.str()
			if err != nil {
				return nil, err
			}
			if err := set.override(name, value); err != nil {
				return nil, err
			}
		}
	}
	w.startWork(true)
	w.set = set
	return nil, nil
}

// override applies one SetOptions override as Settings::update would.
func (s *settings) override(name, value string) error {
	switch name {
	case "build-timeout", "build-max-silent-time", "build-max-jobs", "build-cores", "build-repeat":
		n, err := strconv.Atoi(value)
		if err != nil {
			return errorf("configuration setting `%s' should have an integer value", name)
		}
		switch name {
		case "build-timeout":
			s.timeout = n
		case "build-max-silent-time":
			s.maxSilent = n
		}
	case "multiplexed-build-output":
		if value != "true" && value != "false" {
			return errorf("configuration option `%s' should be either `true' or `false', not `%s'", name, value)
		}
	}
	return nil
}
