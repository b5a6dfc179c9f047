// Package integration holds the end-to-end tests of offload: the real binary, started
// as guix-daemon starts it (integration/daemon), against build machines that are real
// OpenSSH sshd servers on 127.0.0.1 running the `guix` stand-in (integration/farm,
// integration/cmd/fakeguix).
package integration
