package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"strings"

	"offload/integration/drv"
	"offload/storeio"
)

// Hostile exports, for tests of the receiving side. FAKEGUIX_HOSTILE names
// the mode; each one breaks exactly one rule and keeps the rest right
// (proper signatures by the machine's key unless the mode is about them):
//
//	unsigned     no signatures
//	unknown-key  signed with a fresh key nobody authorized
//	extra-path   one more item that the request did not ask for
//	truncated    the stream stops in the middle of the first nar
//	dotdot       the first item's nar has a directory entry named ".."
//	abs-symlink  the first item's nar has an entry "x" that is a symlink to
//	             $FAKEGUIX_HOSTILE_TARGET (default /etc/passwd), then a
//	             second entry "x", a regular file: a restorer that follows
//	             symlinks would overwrite the target
//	wrong-sig    a valid signature by the right key, over other data
//	forged-s     the right hash and key, but s replaced by s+1 mod n: only
//	             the signature arithmetic can tell
//	omit-output  the last requested item is left out (the others are
//	             exported as usual)
//
// These items are written with the small raw writer below because
// storeio's writer refuses to produce them. The modes of `archive
// --missing` are in missingHostile.
func (e *env) exportHostile(mode string, infos []*drv.Info, key *storeio.SecretKey) error {
	items := make([]rawItem, 0, len(infos)+1)
	for _, info := range infos {
		real, _ := e.store.Real(info.Path)
		var nar bytes.Buffer
		if err := storeio.Dump(&nar, real); err != nil {
			return fail("export %s: %v", info.Path, err)
		}
		items = append(items, rawItem{nar: nar.Bytes(), path: info.Path, refs: info.References, deriver: info.Deriver})
	}
	sign := key.Sign
	switch mode {
	case "unsigned":
		sign = nil
	case "unknown-key":
		other, err := storeio.GenerateKey()
		if err != nil {
			return fail("%v", err)
		}
		sign = other.Sign
	case "extra-path":
		var nonce [8]byte
		rand.Read(nonce[:])
		extra := drv.StorePath(e.store.Logical, "extra:"+hex.EncodeToString(nonce[:]), "extra-item")
		items = append(items, rawItem{nar: narRegular("surprise\n"), path: extra})
	case "dotdot":
		items[0].nar = narDir(entry("..", nodeRegular("escaped\n")))
	case "abs-symlink":
		target := e.getenv("FAKEGUIX_HOSTILE_TARGET")
		if target == "" {
			target = "/etc/passwd"
		}
		items[0].nar = narDir(entry("x", nodeSymlink(target)), entry("x", nodeRegular("overwritten by a hostile archive\n")))
	case "wrong-sig":
		sign = func(hash [32]byte) ([]byte, error) {
			return key.Sign(sha256.Sum256(append(hash[:], "other data"...)))
		}
	case "forged-s":
		sign = func(hash [32]byte) ([]byte, error) {
			sig, err := key.Sign(hash)
			if err != nil {
				return nil, err
			}
			return forgeS(sig)
		}
	case "omit-output":
		if len(items) > 0 {
			items = items[:len(items)-1]
		}
	case "truncated":
		var b bytes.Buffer
		if err := writeRawBundle(&b, items, sign); err != nil {
			return fail("%v", err)
		}
		_, err := e.stdout.Write(b.Bytes()[:8+len(items[0].nar)/2])
		return err
	default:
		return fail("unknown FAKEGUIX_HOSTILE mode %q", mode)
	}
	if err := writeRawBundle(e.stdout, items, sign); err != nil {
		return fail("%v", err)
	}
	return nil
}

// ed25519Order is n, the order of the Ed25519 base point (FORMATS.md).
var ed25519Order = func() *big.Int {
	n, _ := new(big.Int).SetString("27742317777372353535851937790883648493", 10)
	return n.Add(n, new(big.Int).Lsh(big.NewInt(1), 252))
}()

// forgeS returns the ECDSA signature sig with s replaced by s+1 mod n, everything
// else (hash, r, key) unchanged.
func forgeS(sig []byte) ([]byte, error) {
	sx, err := storeio.ParseSexp(sig)
	if err != nil {
		return nil, err
	}
	ecdsa := sx.Find("ecdsa")
	if ecdsa == nil || ecdsa.Find("s") == nil || len(ecdsa.Find("s").List) != 2 {
		return nil, fmt.Errorf("no (ecdsa ... (s #..#)) in %s", sig)
	}
	v := ecdsa.Find("s").List[1]
	s := new(big.Int).SetBytes(v.Atom)
	s.Add(s, big.NewInt(1)).Mod(s, ed25519Order)
	v.Atom = s.FillBytes(make([]byte, 32))
	return []byte(sx.String()), nil
}

// missingHostile adds to the answer of `archive --missing` (written to w after the
// genuinely missing paths) what a hostile machine would:
//
//	missing-unasked PATH...  the paths given, which the request did not ask about
//	missing-option           option-like words: --foo and -x
//
// Other modes (those of `archive --export`) add nothing.
func (e *env) missingHostile(w io.Writer, mode string, args []string) error {
	var extra []string
	switch mode {
	case "missing-unasked":
		if len(args) == 0 {
			return fail("FAKEGUIX_HOSTILE mode %q needs the paths to answer", mode)
		}
		extra = args
	case "missing-option":
		extra = []string{"--foo", "-x"}
	default:
		if strings.HasPrefix(mode, "missing-") {
			return fail("unknown FAKEGUIX_HOSTILE mode %q", mode)
		}
	}
	for _, x := range extra {
		if _, err := fmt.Fprintln(w, x); err != nil {
			return err
		}
	}
	return nil
}

type rawItem struct {
	nar     []byte
	path    string
	refs    []string
	deriver string
}

// writeRawBundle writes items in the export format of FORMATS.md; sign ==
// nil writes them unsigned.
func writeRawBundle(w interface{ Write([]byte) (int, error) }, items []rawItem, sign func([32]byte) ([]byte, error)) error {
	var b bytes.Buffer
	for _, it := range items {
		putInt(&b, 1)
		var item bytes.Buffer
		item.Write(it.nar)
		putInt(&item, 0x4558494e)
		putStr(&item, it.path)
		putInt(&item, uint64(len(it.refs)))
		for _, r := range it.refs {
			putStr(&item, r)
		}
		putStr(&item, it.deriver)
		b.Write(item.Bytes())
		if sign == nil {
			putInt(&b, 0)
			continue
		}
		sig, err := sign(sha256.Sum256(item.Bytes()))
		if err != nil {
			return fmt.Errorf("sign %s: %w", it.path, err)
		}
		putInt(&b, 1)
		putStr(&b, string(sig))
	}
	putInt(&b, 0)
	_, err := w.Write(b.Bytes())
	return err
}

func putInt(b *bytes.Buffer, n uint64) {
	var x [8]byte
	binary.LittleEndian.PutUint64(x[:], n)
	b.Write(x[:])
}

func putStr(b *bytes.Buffer, s string) {
	putInt(b, uint64(len(s)))
	b.WriteString(s)
	if pad := (8 - len(s)%8) % 8; pad > 0 {
		b.Write(make([]byte, pad))
	}
}

// A tiny nar builder: nodes are token lists.
type node []string

func nodeRegular(contents string) node {
	return node{"(", "type", "regular", "contents", contents, ")"}
}

func nodeSymlink(target string) node { return node{"(", "type", "symlink", "target", target, ")"} }

func entry(name string, n node) node {
	return append(node{"entry", "(", "name", name, "node"}, append(n, ")")...)
}

func narDir(entries ...node) []byte {
	n := node{"(", "type", "directory"}
	for _, e := range entries {
		n = append(n, e...)
	}
	return narOf(append(n, ")"))
}

func narRegular(contents string) []byte { return narOf(nodeRegular(contents)) }

func narOf(n node) []byte {
	var b bytes.Buffer
	putStr(&b, "nix-archive-1")
	for _, tok := range n {
		putStr(&b, tok)
	}
	return b.Bytes()
}
