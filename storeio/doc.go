// Package storeio owns the store's archive formats and the safe restoring of store
// items: nars (Dump, Restore; nar.go), the export bundle format of `guix archive
// --export` (BundleWriter, BundleReader, ListBundle, VerifyBundle; bundle.go), the
// all-or-nothing import of a bundle into the store (ImportBundle, CleanStaleTemps;
// import.go), libgcrypt s-expressions (ParseSexp), Guix's signing keys, signatures and
// ACL (ECDSA over Ed25519 and RSA PKCS#1 v1.5), and store path validation.
//
// Everything streams: no nar or file is ever held in memory whole. Every reader treats
// its input as hostile (it comes from another machine and we run as root): names are
// checked, symlinks are never followed, and a failed restore removes what it made.
//
// It does not run programs (sshexec does), talk to the daemon (hook does), take locks
// (locking does) or register items in the store database (the daemon does that itself
// after the hook exits).
package storeio
