#!/bin/sh
# Installs what the tests and the demo need on a Debian machine, only when missing:
# OpenSSH's client and server (real sshd for the tests), nix-bin (an independent
# implementation of the nar and export formats), Guile (the guix stand-in's `guix repl`
# runs it), and the Go modules.
set -eu
need=""
command -v ssh >/dev/null 2>&1 || need="$need openssh-client"
[ -x /usr/sbin/sshd ] || need="$need openssh-server"
command -v nix-store >/dev/null 2>&1 || need="$need nix-bin"
command -v zstd >/dev/null 2>&1 || need="$need zstd"
command -v guile >/dev/null 2>&1 || need="$need guile-3.0"
if [ -n "$need" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deps: missing:$need; run as root or install them with apt-get" >&2
		exit 1
	fi
	echo "install-deps: installing$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
# sshd refuses to start without its privilege separation directory.
[ -d /run/sshd ] || mkdir -p /run/sshd
go mod download
