package drv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Spec describes a derivation to create with Make.
type Spec struct {
	Name      string            // e.g. "t-ok"; the .drv is NAME.drv, output "out" is NAME, others NAME-OUTPUT
	System    string            // default "x86_64-linux"
	Builder   string            // absolute program
	Args      []string          // builder arguments
	Env       map[string]string // builder environment (outputs are added)
	Outputs   []string          // default ["out"]
	InputDrvs map[string][]string
	InputSrcs []string
	Features  []string // requiredSystemFeatures
	Nonce     string   // makes otherwise identical derivations differ
}

// Make writes the .drv of spec into s and registers it in s's db (its
// references are its input derivations and sources, which must be valid).
// The output paths are derived from the text, so different specs give
// different paths; they are not Nix's real output hashes.
func (s Store) Make(spec Spec) (*Derivation, error) {
	if spec.Name == "" || spec.Builder == "" {
		return nil, fmt.Errorf("make derivation: name and builder are required")
	}
	d := &Derivation{System: spec.System, Builder: spec.Builder, Args: spec.Args}
	if d.System == "" {
		d.System = "x86_64-linux"
	}
	outs := spec.Outputs
	if len(outs) == 0 {
		outs = []string{"out"}
	}
	for _, o := range outs {
		d.Outputs = append(d.Outputs, Output{Name: o})
	}
	var refs []string
	for p, o := range spec.InputDrvs {
		d.InputDrvs = append(d.InputDrvs, InputDrv{Path: p, Outputs: append([]string(nil), o...)})
		refs = append(refs, p)
	}
	d.InputSrcs = append(d.InputSrcs, spec.InputSrcs...)
	refs = append(refs, spec.InputSrcs...)
	for _, r := range refs {
		if !s.Valid(r) {
			return nil, fmt.Errorf("make derivation %s: input %s is not valid", spec.Name, r)
		}
	}
	for k, v := range spec.Env {
		d.Env = append(d.Env, EnvVar{Name: k, Value: v})
	}
	if len(spec.Features) > 0 {
		d.Env = append(d.Env, EnvVar{Name: "requiredSystemFeatures", Value: strings.Join(spec.Features, " ")})
	}
	if spec.Nonce != "" {
		d.Env = append(d.Env, EnvVar{Name: "NONCE", Value: spec.Nonce})
	}
	for _, o := range outs {
		d.Env = append(d.Env, EnvVar{Name: o, Value: ""})
	}
	d.Normalize()

	paths := s.OutputPathsOf(d, spec.Name)
	for i, o := range d.Outputs {
		d.Outputs[i].Path = paths[o.Name]
		for j := range d.Env {
			if d.Env[j].Name == o.Name {
				d.Env[j].Value = d.Outputs[i].Path
			}
		}
	}
	text := d.Bytes()
	sum := sha256.Sum256(text)
	sort.Strings(refs)
	// The daemon's type is "text" then ":REF" for each reference: a .drv without
	// references is "text:sha256:...", not "text::sha256:..." (WORKER-PROTOCOL.md §4.4).
	typ := "text"
	for _, r := range refs {
		typ += ":" + r
	}
	d.Path = StorePath(s.Logical, typ+":sha256:"+hex.EncodeToString(sum[:])+":"+s.Logical+":"+spec.Name+".drv", spec.Name+".drv")
	if err := s.CheckPath(d.Path); err != nil {
		return nil, fmt.Errorf("make derivation: %w", err)
	}
	real, _ := s.Real(d.Path)
	if !s.Valid(d.Path) {
		if err := WriteFileAtomic(real, text, 0o444); err != nil {
			return nil, fmt.Errorf("make derivation %s: %w", d.Path, err)
		}
		if err := s.Register(Info{Path: d.Path, References: refs}); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// OutputPathsOf returns the path of each output of d (by output name) as Make
// computes them for a derivation called name (the .drv's name without ".drv"): like
// Nix, a hash of the text with the outputs' paths and variables left empty. A daemon
// checks a .drv it is given against them, as the real one checks a .drv's outputs.
func (s Store) OutputPathsOf(d *Derivation, name string) map[string]string {
	blankD := *d
	blankD.Outputs = append([]Output(nil), d.Outputs...)
	blankD.Env = append([]EnvVar(nil), d.Env...)
	for i, o := range blankD.Outputs {
		blankD.Outputs[i].Path = ""
		for j := range blankD.Env {
			if blankD.Env[j].Name == o.Name {
				blankD.Env[j].Value = ""
			}
		}
	}
	blank := sha256.Sum256(blankD.Bytes())
	paths := map[string]string{}
	for _, o := range d.Outputs {
		oname := name
		if o.Name != "out" {
			oname += "-" + o.Name
		}
		paths[o.Name] = StorePath(s.Logical, "output:"+o.Name+":sha256:"+hex.EncodeToString(blank[:])+":"+s.Logical+":"+oname, oname)
	}
	return paths
}

// Make is Store{storeDir, realDir, realDir/../db}.Make(spec).
func Make(storeDir, realDir string, spec Spec) (*Derivation, error) {
	return Store{Logical: storeDir, Physical: realDir, DB: filepath.Join(filepath.Dir(realDir), "db")}.Make(spec)
}

// Read parses the .drv p of s (p is the logical path).
func (s Store) Read(p string) (*Derivation, error) {
	real, err := s.Real(p)
	if err != nil {
		return nil, err
	}
	text, err := os.ReadFile(real)
	if err != nil {
		return nil, fmt.Errorf("read derivation: %w", err)
	}
	return Parse(p, text)
}

// WriteFileAtomic writes data to path through a temporary file and a rename, so that
// a reader never sees a half-written file; it creates the parent directory.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".offload-tmp-drv-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), mode)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
