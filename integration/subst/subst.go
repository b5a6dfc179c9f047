// Package subst is the test farm's substitute server, shared by the stand-ins for guix
// (fakeguix: `guix build ITEM...`) and for guix-daemon (workerd: BuildPaths of plain
// items), so that both fetch the same way.
//
// The server is a directory ($FAKEGUIX_SUBSTITUTES on a farm machine) holding one file
// per substitutable item, named by the item's 32-character hash part: a signed one-item
// export bundle, which carries what a narinfo and its nar give the real daemon (the
// nar, the item's references and deriver, a signature). An item whose file exists has a
// substitute; fetching it verifies the bundle as `guix archive --import` does (every
// byte, and a signature by a key of the machine's ACL), so a truncated or
// foreign-signed file is a substitute that fails to download.
package subst

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"offload/integration/drv"
	"offload/storeio"
)

// Server is the directory of a substitute server; "" is none (nothing has a
// substitute).
type Server string

// File is where the substitute of item p lives, "" without a server or when p has no
// hash part.
func (s Server) File(p string) string {
	base := filepath.Base(p)
	if s == "" || len(base) < 32 {
		return ""
	}
	return filepath.Join(string(s), base[:32])
}

// Has tells whether the server has a substitute of p.
func (s Server) Has(p string) bool {
	file := s.File(p)
	if file == "" {
		return false
	}
	_, err := os.Stat(file)
	return err == nil
}

// Info is what the server's narinfo says of p: its references and deriver, read from
// its file without installing or verifying anything. A file too broken to read has no
// readable narinfo: the error says why.
func (s Server) Info(p string) (storeio.ItemInfo, error) {
	f, err := os.Open(s.File(p))
	if err != nil {
		return storeio.ItemInfo{}, err
	}
	defer f.Close()
	items, err := storeio.ListBundle(f)
	if err == nil && (len(items) != 1 || items[0].Path != p) {
		err = fmt.Errorf("the substitute of %s holds something else", p)
	}
	if err != nil {
		return storeio.ItemInfo{}, err
	}
	return items[0], nil
}

// Install fetches p from its substitute into st: verified against acl, restored all or
// nothing (storeio.ImportBundle, which accepts only p: a failure leaves nothing at p's
// path nor any temporary), and registered with the references and deriver it came
// with. Whatever bytes already sit at p's path are kept (ImportBundle without Replace):
// a caller that must not trust them removes them first. Checking that the references
// are valid is the caller's.
func (s Server) Install(st drv.Store, acl *storeio.ACL, p string) (drv.Info, error) {
	f, err := os.Open(s.File(p))
	if err != nil {
		return drv.Info{}, err
	}
	defer f.Close()
	got, err := storeio.ImportBundle(f, storeio.ImportOptions{
		StoreDir: st.Logical, RealDir: st.Physical, ACL: acl, Allowed: []string{p},
	})
	if err == nil && (len(got) != 1 || got[0].Path != p) {
		err = fmt.Errorf("the substitute of %s holds something else", p)
	}
	if err != nil {
		return drv.Info{}, err
	}
	info := drv.Info{Path: p, References: got[0].References, Deriver: got[0].Deriver}
	if err := st.Register(info); err != nil {
		return drv.Info{}, err
	}
	return info, nil
}

// LoadACL reads the ACL of a machine's configuration directory (GUIX_CONFIGURATION_DIRECTORY),
// against which substitutes and imports are checked; none is an empty one.
func LoadACL(confDir string) (*storeio.ACL, error) {
	acl, err := storeio.LoadACL(filepath.Join(confDir, "acl"))
	if errors.Is(err, os.ErrNotExist) {
		return storeio.ParseACL([]byte("(acl)"))
	}
	return acl, err
}

// ErrorLine is the line the substituter (`guix substitute`) writes on its standard
// error when a fetch fails with err, without the newline.
func ErrorLine(err error) string { return "guix substitute: error: " + ImportMessage(err) }

// ImportMessage words an import refusal the way guix-daemon and `guix authenticate` do
// (nix/libstore/local-store.cc, guix/scripts/authenticate.scm).
func ImportMessage(err error) string {
	switch {
	case errors.Is(err, storeio.ErrNoSignature):
		return "cannot import path because it lacks a valid signature: " + err.Error()
	case errors.Is(err, storeio.ErrInvalidHash):
		return "signed hash doesn't match actual contents of imported archive; archive could be corrupt, or someone is trying to import a Trojan horse: " + err.Error()
	}
	// ErrUnauthorizedKey and ErrInvalidSignature already read "unauthorized
	// public key: ..." / "invalid signature: ...".
	return err.Error()
}
