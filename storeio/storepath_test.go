package storeio

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

func TestValidateStorePath(t *testing.T) {
	h := "24qd8hd2sn67df4gwbpdc33axwnm3r61"
	for _, tc := range []struct {
		p  string
		ok bool
	}{
		{"/gnu/store/" + h + "-vec-plain.txt", true},
		{"/gnu/store/" + h + "-a+b-c._?=X9", true},
		{"/gnu/store/" + h + "-x.drv", true},
		{"/gnu/store/" + h + "-", false},
		{"/gnu/store/" + h + "-.hidden", false},
		{"/gnu/store/" + h + "-a/b", false},
		{"/gnu/store/" + h + "-a/", false},
		{"/gnu/store/" + h + "-a b", false},
		{"/gnu/store/" + h + "-a\x00", false},
		{"/gnu/store/" + h[:31] + "-abc", false},
		{"/gnu/store/" + h[:31] + "e-abc", false}, // e is not in Nix's alphabet
		{"/gnu/store/" + h + "xabc", false},
		{"/gnu/store/../" + h + "-abc", false},
		{"/gnu/store//" + h + "-abc", false},
		{"/gnu/storex/" + h + "-abc", false},
		{"/nix/store/" + h + "-abc", false},
		{"gnu/store/" + h + "-abc", false},
		{"", false},
	} {
		err := ValidateStorePath("/gnu/store", tc.p)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.p, err)
		}
	}
	if err := ValidateStorePath("/gnu/store/", "/gnu/store/"+h+"-a"); err == nil {
		t.Error("unclean store dir accepted")
	}
	if err := ValidateDrvPath("/gnu/store", "/gnu/store/"+h+"-a.drv"); err != nil {
		t.Error(err)
	}
	if err := ValidateDrvPath("/gnu/store", "/gnu/store/"+h+"-a"); err == nil {
		t.Error("non-.drv accepted")
	}
}

func TestStoreDir(t *testing.T) {
	t.Setenv("NIX_STORE_DIR", "")
	if StoreDir() != "/gnu/store" {
		t.Error(StoreDir())
	}
	t.Setenv("NIX_STORE_DIR", "/tmp/s")
	if StoreDir() != "/tmp/s" {
		t.Error(StoreDir())
	}
}

// NixBase32 is also checked against the daemon's hashes in TestListBundleMatchesDaemon and
// against nix-store --query --hash in TestBundleMatchesNixExport.
func TestNixBase32Length(t *testing.T) {
	if n := len(NixBase32(make([]byte, 32))); n != 52 {
		t.Errorf("sha256 in base32 has %d characters, want 52", n)
	}
	if NixBase32(make([]byte, 20)) != "00000000000000000000000000000000" {
		t.Error("zero hash")
	}
}

// The daemon's own path for a text item without references (vec-plain.txt in
// vectors/bundles, made by add-text-to-store) and for one with a reference (vec-ref.txt).
func TestMakeStorePathMatchesDaemon(t *testing.T) {
	plain := "/gnu/store/24qd8hd2sn67df4gwbpdc33axwnm3r61-vec-plain.txt"
	for _, tc := range []struct{ typ, content, name, want string }{
		{"text", "Hello, test vectors!\n", "vec-plain.txt", plain},
		{"text:" + plain, "This item refers to " + plain + "\n", "vec-ref.txt",
			"/gnu/store/hr0w17rzhvdq4jwa0sb4grs6h9na174y-vec-ref.txt"},
	} {
		sum := sha256.Sum256([]byte(tc.content))
		fp := tc.typ + ":sha256:" + hex.EncodeToString(sum[:]) + ":/gnu/store:" + tc.name
		if got := MakeStorePath("/gnu/store", fp, tc.name); got != tc.want {
			t.Errorf("MakeStorePath(%q) = %s, want %s", fp, got, tc.want)
		}
	}
}
