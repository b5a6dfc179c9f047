// Package sshexec is the one place where offload starts other programs: local commands
// (such as `guix archive --export`) and remote commands through the system's OpenSSH
// client.
//
// It owns the ssh command line (identity, user, port, compression, the machine's own
// ssh-options), host key pinning (a root-only known-hosts file per machine under the state
// directory, StrictHostKeyChecking=yes), connection sharing (ControlMaster/ControlPersist
// with sockets in a root-only directory), POSIX-shell quoting of remote commands, tracing
// of every spawned command as a pasteable shell line, and turning exit statuses into
// typed errors: *UnreachableError when ssh itself failed (status 255), *RemoteError when
// the remote command failed, *ExitError when a local command failed. Its errors never
// name the machine: the caller that chose it does, once (docs/hook.md).
//
// Every process it starts runs in its own process group, is killed with its group when
// the context is cancelled, and is always waited for. Streams are wired straight to the
// process: nothing buffers a whole archive in memory.
//
// It does not know what the commands mean (the hook package decides which guix commands
// to run and validates store paths and names before they get here), does not read
// machines.scm (the machines package turns a machine into a Target), and does not choose
// or lock machines (machines and locking do).
package sshexec
