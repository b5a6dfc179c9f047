#!/bin/sh
# nixfarm.sh: Nix's own remote builds on this machine, the baseline of the Nix benchmarks
# (integration/bench_nix_test.go, `make bench`). Runs as root, without a terminal.
#
#   nixfarm.sh start DIR [SHELL_DELAY]  set up in DIR (created; must not exist), print
#                                       port=N, pid=N (sshd), dir=DIR
#   nixfarm.sh local DIR CMD...         run CMD as the local side (nix-instantiate,
#                                       nix-store --realise ...)
#   nixfarm.sh remote DIR CMD...        run CMD as the build machine (its GC, ...)
#   nixfarm.sh stop DIR                 kill sshd and what still runs in either namespace,
#                                       remove DIR
#
# What it builds, all under DIR:
#   - remote/nix: the build machine's store, bind-mounted on /nix in a private mount
#     namespace (unshare -m) that only its sshd and the sessions it starts live in, so the
#     machine's store is not the local one (or the host's, which has none) although both
#     are /nix/store: Nix copies between them as between two hosts. Only /nix is private;
#     /bin/sh and the rest are the host's, which is what the builders use.
#   - sshd on 127.0.0.1, a random free port, key-only: root logs in (Nix runs
#     `nix-store --serve --write` there over ssh://, as root on a real build machine) with
#     DIR/client_key alone. SetEnv gives the sessions NIX_CONF_DIR=remote/etc, and SHLVL=1
#     so that bash does not read root's ~/.bashrc for ssh commands (a plain shell, as
#     for our own farm: scripts/test-sshd.sh says why). LogLevel
#     VERBOSE: its log (DIR/sshd.log) counts the sessions ("Starting session"). With
#     SHELL_DELAY (seconds), ForceCommand sleeps that long before running the command
#     with root's shell: the slow shell start-up our tiny-offload benchmark gives its
#     machine (slowShell in integration/bench_test.go), so the two are timed alike.
#   - local/nix: the local store, bind-mounted on /nix in a second private namespace,
#     kept by a sleeping process (DIR/local.pid) that `local` commands join (nsenter): the
#     host whose builds all go to the machine. `stop` ends every process in either
#     namespace, found by the namespace itself, so nothing the builds started survives.
#   - ssh_config + known_hosts: the local ssh (NIX_SSHOPTS=-F ssh_config) uses our key
#     and pins the host key we generated (StrictHostKeyChecking yes, BatchMode: never a
#     prompt; ConnectTimeout: a dead sshd fails a build instead of hanging it), reading
#     no ~/.ssh or /etc/ssh config.
#   - remote/etc/nix.conf and local/etc/nix.conf (NIX_CONF_DIR, so /etc/nix is not read):
#       build-users-group =   builds run as root: no nixbld users or group needed
#       sandbox = false       no sandbox (needs those users and more); builders see /bin/sh
#       substituters =        nothing fetched from a cache: every path goes over our ssh
#     and the local side alone:
#       max-jobs = 0          nothing built locally: every build goes to the machine
#       builders = @machines  the one machine, 2 slots (max-jobs 2 in its line, as our
#                             benchmarks' parallel-builds 2), speed factor 1
#       builders-use-substitutes = false   the machine fetches nothing itself either
#
# /nix is created (empty) on the host when missing, as the mount point; it stays, since
# removing it would unmount it in any other nixfarm's namespaces. No mount is made
# outside those private namespaces, which end with their last process.
set -eu

usage() {
	echo "usage: $0 start DIR [SHELL_DELAY] | local DIR CMD... | remote DIR CMD... | stop DIR" >&2
	exit 2
}
die() { echo "nixfarm: $*" >&2; exit 1; }

[ $# -ge 2 ] || usage
op=$1
dir=$2
shift 2

# listening PORT: true when something listens on TCP PORT (IPv4 or IPv6).
listening() {
	hex=$(printf '%04X' "$1")
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
		awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }'
}

# A port below Linux's ephemeral range (32768-60999), so outgoing connections do not take it.
random_port() {
	n=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
	echo $((10000 + n % 22000))
}

# sshd_pid: the pid of DIR's sshd, or nothing.
sshd_pid() {
	[ -s "$dir/sshd.pid" ] && cat "$dir/sshd.pid" || :
}

start() {
	delay=${1:-}
	[ "$(id -u)" = 0 ] || die "must run as root (it mounts /nix in private namespaces)"
	for p in unshare nsenter nix-store nix-instantiate ssh ssh-keygen; do
		command -v "$p" >/dev/null || die "$p not found"
	done
	sshd=${SSHD:-/usr/sbin/sshd}
	[ -x "$sshd" ] || die "$sshd not found (install openssh-server)"
	[ ! -e "$dir" ] || die "$dir already exists"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd) # sshd wants absolute paths
	trap '[ $? = 0 ] || stop' EXIT # a failed start leaves nothing running
	mkdir -p /nix /run/sshd
	chmod 0755 /run/sshd
	mkdir -p "$dir/remote/nix" "$dir/remote/etc" "$dir/local/nix" "$dir/local/etc"

	ssh-keygen -q -t ed25519 -N '' -C nixfarm-host -f "$dir/host_ed25519"
	ssh-keygen -q -t ed25519 -N '' -C nixfarm-client -f "$dir/client_key"
	cp "$dir/client_key.pub" "$dir/authorized_keys"

	common='build-users-group =
sandbox = false
substituters =
'
	printf '%s' "$common" >"$dir/remote/etc/nix.conf"
	printf '%smax-jobs = 0\nbuilders = @%s\nbuilders-use-substitutes = false\n' \
		"$common" "$dir/local/etc/machines" >"$dir/local/etc/nix.conf"
	# The machine builds for this host's own system (builtins.currentSystem), 2 at once.
	echo "ssh://root@127.0.0.1 $(uname -m)-linux $dir/client_key 2 1 - - -" >"$dir/local/etc/machines"

	force=
	if [ -n "$delay" ]; then
		cat >"$dir/slow-shell" <<EOF
#!/bin/sh
sleep $delay
exec /bin/sh -c "\$SSH_ORIGINAL_COMMAND"
EOF
		chmod 0755 "$dir/slow-shell"
		force="ForceCommand $dir/slow-shell"
	fi

	tries=0
	while :; do
		tries=$((tries + 1))
		port=$(random_port)
		if listening "$port"; then
			continue
		fi
		cat >"$dir/sshd_config" <<EOF
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
SetEnv "NIX_CONF_DIR=$dir/remote/etc" "SHLVL=1"
$force
EOF
		rm -f "$dir/sshd.pid"
		: >"$dir/sshd.log"
		# The machine's namespace: its store on /nix, a store database made before any
		# session (not in the first timed build), then sshd, which forks into the
		# background and keeps the namespace alive.
		NIX_CONF_DIR="$dir/remote/etc" unshare -m --propagation private sh -c '
			mount --bind "$1/remote/nix" /nix &&
			nix-store --init &&
			exec "$2" -f "$1/sshd_config" -E "$1/sshd.log"' sh "$dir" "$sshd" ||
			die "could not start the machine's sshd: $(tail -n 3 "$dir/sshd.log")"
		i=0
		while [ $i -lt 100 ]; do
			if [ -s "$dir/sshd.pid" ] && listening "$port"; then
				break 2
			fi
			if grep -q -e 'Cannot bind' -e 'fatal' "$dir/sshd.log" 2>/dev/null; then
				break
			fi
			sleep 0.1
			i=$((i + 1))
		done
		pid=$(sshd_pid)
		[ -z "$pid" ] || kill "$pid" 2>/dev/null || :
		if [ $tries -ge 5 ]; then
			die "sshd did not start; last lines of $dir/sshd.log: $(tail -n 5 "$dir/sshd.log")"
		fi
	done

	echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" >"$dir/known_hosts"
	cat >"$dir/ssh_config" <<EOF
Host *
	Port $port
	IdentityFile $dir/client_key
	IdentitiesOnly yes
	UserKnownHostsFile $dir/known_hosts
	GlobalKnownHostsFile /dev/null
	StrictHostKeyChecking yes
	BatchMode yes
	ConnectTimeout 10
EOF
	# The local namespace: its store on /nix, kept by a process that only sleeps (its
	# stdio away from ours, or whoever reads our output would wait for it to end).
	unshare -m --propagation private sh -c '
		mount --bind "$1/local/nix" /nix && exec sleep infinity' sh "$dir" </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/local.pid"
	i=0
	until [ "$(readlink "/proc/$!/ns/mnt" 2>/dev/null)" != "$(readlink /proc/$$/ns/mnt)" ] &&
		grep -q ' /nix ' "/proc/$!/mountinfo" 2>/dev/null; do
		kill -0 $! 2>/dev/null || die "could not make the local namespace"
		[ $i -lt 100 ] || die "the local namespace did not come up"
		sleep 0.1
		i=$((i + 1))
	done
	run_local nix-store --init
	echo "port=$port"
	echo "pid=$(sshd_pid)"
	echo "dir=$dir"
}

# run_local CMD...: CMD as the local side: in its namespace, with its nix.conf and ssh.
run_local() {
	NIX_CONF_DIR="$dir/local/etc" NIX_SSHOPTS="-F $dir/ssh_config" NIX_REMOTE= \
		nsenter -t "$(cat "$dir/local.pid")" -m -- "$@"
}

# kill_ns PID: end PID and every other process in its mount namespace.
kill_ns() {
	kill -0 "$1" 2>/dev/null || return 0
	ns=$(readlink "/proc/$1/ns/mnt") || return 0
	kill "$1" 2>/dev/null || :
	i=0
	while [ $i -lt 50 ]; do
		left=$(in_ns "$ns")
		[ -n "$left" ] || return 0
		[ $i -lt 20 ] && sig=TERM || sig=KILL
		kill -s $sig $left 2>/dev/null || :
		sleep 0.1
		i=$((i + 1))
	done
	die "processes left in a namespace of $dir: $(in_ns "$ns")"
}

# in_ns NS: pids of the processes in mount namespace NS (as readlink shows it).
in_ns() {
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$1" ] && echo "${p#/proc/}"
	done
	:
}

stop() {
	[ -d "$dir" ] || return 0
	# sshd first (no new sessions), then whatever its sessions left behind; then the
	# local side.
	pid=$(sshd_pid)
	[ -z "$pid" ] || kill_ns "$pid"
	[ ! -s "$dir/local.pid" ] || kill_ns "$(cat "$dir/local.pid")"
	# Store items are read-only; root removes them anyway, anyone else needs write bits.
	chmod -R u+w "$dir" 2>/dev/null || :
	rm -rf "$dir"
}

case $op in
start) [ $# -le 1 ] || usage; start "$@" ;;
local)
	[ $# -ge 1 ] || usage
	[ -s "$dir/local.pid" ] && kill -0 "$(cat "$dir/local.pid")" 2>/dev/null || die "$dir: not started"
	run_local "$@"
	;;
remote)
	[ $# -ge 1 ] || usage
	pid=$(sshd_pid)
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || die "$dir: no sshd running"
	NIX_CONF_DIR="$dir/remote/etc" nsenter -t "$pid" -m -- "$@"
	;;
stop) [ $# -eq 0 ] || usage; stop ;;
*) usage ;;
esac
