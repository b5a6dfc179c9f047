// Package drv reads and writes Guix/Nix derivations (the ATerm
// `Derive(...)` text of a .drv file) and keeps the small "fake store" that the
// test programs share: item paths are logical (the same string on every
// side), bytes live under a physical directory, and a db directory holds one
// file per valid item with its references and deriver.
//
// It is test infrastructure for cmd/fakeguix, cmd/fakedaemon and farm; it
// does not restore archives or check signatures (offload/storeio does).
package drv
