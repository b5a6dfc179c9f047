#!/bin/sh
# test-sshd.sh DIR [ENVFILE]: start a throwaway OpenSSH sshd on 127.0.0.1 for tests.
#
# DIR is created (it must not hold a running sshd) with a fresh ed25519 host key, a fresh
# client key authorized for the current user, and an sshd_config. ENVFILE, when given,
# holds K=V lines that remote commands see in their environment (sshd's SetEnv), e.g. a
# PATH. On success it prints three lines and exits, leaving sshd running in the background:
#   port=N
#   hostkey=ssh-ed25519 AAAA... (the host key, as machines.scm's host-key wants it)
#   key=DIR/client_key
# Stop it with: kill "$(cat DIR/sshd.pid)". Its log (LogLevel VERBOSE) is DIR/sshd.log.
#
# The server allows forwarding, Unix sockets included (ssh -L LOCAL:REMOTE-SOCKET), as
# Debian's and Guix System's sshd do by default. With TEST_SSHD_DISABLE_FORWARDING=1 in
# the environment it refuses every forward (DisableForwarding yes), as a hardened
# machine does: the client's forward still binds, and each connection through it is
# closed at once.
set -eu

usage() { echo "usage: $0 DIR [ENVFILE]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
dir=$1
envfile=${2:-}

sshd=${SSHD:-/usr/sbin/sshd}
[ -x "$sshd" ] || { echo "$0: $sshd not found (install openssh-server)" >&2; exit 1; }
command -v ssh-keygen >/dev/null || { echo "$0: ssh-keygen not found" >&2; exit 1; }

mkdir -p "$dir"
dir=$(cd "$dir" && pwd) # sshd wants absolute paths
if [ -f "$dir/sshd.pid" ] && kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null; then
	echo "$0: an sshd already runs for $dir (pid $(cat "$dir/sshd.pid"))" >&2
	exit 1
fi
rm -f "$dir/host_ed25519" "$dir/host_ed25519.pub" "$dir/client_key" "$dir/client_key.pub"
ssh-keygen -q -t ed25519 -N '' -C test-sshd-host -f "$dir/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C test-sshd-client -f "$dir/client_key"
cp "$dir/client_key.pub" "$dir/authorized_keys"

# sshd refuses to start without its privilege separation directory.
mkdir -p /run/sshd
chmod 0755 /run/sshd

# setenv_line prints one SetEnv line with ENVFILE's K=V pairs, each double-quoted so that
# values may hold spaces.
#
# It always sets SHLVL=1, so that the login shell, when it is bash, does not read
# ~/.bashrc for ssh commands (bash reads it only at shell level 1): the farm's machines
# are build machines whose user has a plain shell. The machines our CI runs on give root
# a ~/.bashrc that runs `pyenv rehash` (relinking every shim under a lock, left behind
# by any session a test kills, on which each later login waits 60 s): with many logins
# at once it took most of the CPU and timed probes out. PYENV_REHASH_TIMEOUT=1 bounds
# that wait wherever a bash still reads it.
setenv_line() {
	line=' "SHLVL=1" "PYENV_REHASH_TIMEOUT=1"'
	[ -n "$envfile" ] || { echo "SetEnv$line"; return 0; }
	while IFS= read -r kv || [ -n "$kv" ]; do
		case $kv in
		'' | '#'*) continue ;;
		*=*) ;;
		*) echo "$0: $envfile: not a K=V line: $kv" >&2; exit 1 ;;
		esac
		case $kv in
		*'"'*) echo "$0: $envfile: double quotes are not supported: $kv" >&2; exit 1 ;;
		esac
		line="$line \"$kv\""
	done <"$envfile"
	[ -z "$line" ] || echo "SetEnv$line"
}

# listening PORT: true when something listens on TCP PORT (IPv4 or IPv6).
listening() {
	hex=$(printf '%04X' "$1")
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
		awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }'
}

random_port() {
	# Below Linux's ephemeral range (32768-60999), so outgoing connections do not take it.
	n=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
	echo $((10000 + n % 22000))
}

setenv=$(setenv_line)
if [ "${TEST_SSHD_DISABLE_FORWARDING:-}" = 1 ]; then
	forwarding='DisableForwarding yes'
else
	forwarding='AllowTcpForwarding yes
AllowStreamLocalForwarding yes'
fi
tries=0
while :; do
	tries=$((tries + 1))
	port=$(random_port)
	if listening "$port"; then
		continue
	fi
	cat >"$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/host_ed25519
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $dir/sshd.pid
LogLevel VERBOSE
MaxStartups 100:30:200
MaxSessions 100
$forwarding
$setenv
CONF
	rm -f "$dir/sshd.pid"
	: >"$dir/sshd.log"
	"$sshd" -f "$dir/sshd_config" -E "$dir/sshd.log"
	# sshd forks into the background; wait until it listens or says why it cannot.
	i=0
	while [ $i -lt 100 ]; do
		if [ -s "$dir/sshd.pid" ] && listening "$port"; then
			echo "port=$port"
			echo "hostkey=$(cat "$dir/host_ed25519.pub")"
			echo "key=$dir/client_key"
			exit 0
		fi
		if grep -q -e 'Cannot bind' -e 'fatal' "$dir/sshd.log" 2>/dev/null; then
			break
		fi
		sleep 0.1
		i=$((i + 1))
	done
	if [ -s "$dir/sshd.pid" ]; then
		kill "$(cat "$dir/sshd.pid")" 2>/dev/null || :
	fi
	if [ $tries -ge 5 ]; then
		echo "$0: sshd did not start; last lines of $dir/sshd.log:" >&2
		tail -n 5 "$dir/sshd.log" >&2
		exit 1
	fi
done
