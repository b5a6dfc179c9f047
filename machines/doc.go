// Package machines owns everything about the build machines that does not
// touch the network: Guix's build-machine record (its fields and defaults, the
// checks and warnings of each), reading the machines file
// (/etc/guix/machines.scm) with offload's Scheme interpreter (package
// machines/scheme, to which it adds the build-machine syntax, build-machine?
// and the modules that define them) or else with guix, linting the key files,
// matching a machine against a build request, ranking probed machines to
// choose one, and the per-machine state files that remember connection
// failures (with exponential backoff) and recent load probes.
//
// It does not run ssh or probe machines (package sshexec does), and it does
// not hold build slots or transfer locks (package locking does). Parsing and
// ranking are pure; only Load and State touch the file system.
package machines
