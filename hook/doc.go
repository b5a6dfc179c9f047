// Package hook owns guix-daemon's build-hook protocol and the offload flow.
//
// It reads the daemon's request lines, decides (with package machines) whether to
// accept, decline or postpone (choose.go, queue.go), the cheapest place for the build,
// this machine included, coming from package placement (place.go, which also feeds it
// what each offload teaches), and, after an accept, runs the whole offload in one ssh
// session on the chosen machine (offload.go): it sends the missing inputs, builds
// there, streams the log to fd 4 and restores the outputs into the local store (with
// package storeio). It never spawns a process itself: every
// command goes through package sshexec. Exit codes are decided by main from the errors
// this package returns (see ExitCode). docs/hook.md states the rules it follows.
//
// Its exported decision API (DecideDryRun, AskMachine, AskMissing) serves package
// diagnose, which owns `offload test`, `status` and `explain`. It does not parse
// machines.scm (package machines), speak the archive formats (package storeio) or
// know how slots are locked (package locking).
package hook
