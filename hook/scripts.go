// All the shell text that offload runs on a build machine lives in this file: the
// session script of the shell path, its slot and liveness parts, the transfer and
// substitute functions, and the probe. Each is one line, so that -v traces show it whole.

package hook

import "strings"

// rootsDir is where the remote GC roots of builds in flight live, relative to the
// remote user's home directory (where ssh starts remote commands).
const rootsDir = ".cache/guix/offload"

// sessionScript is all an offload does on the machine after the accept, in one ssh
// session and one remote shell, run as
//
//	sh -c SCRIPT sh ROOTS ROOT DRV TOKEN MAX-SILENT TIMEOUT SLOTS HOLDER [OUTPUT...]
//
// (MAX-SILENT and TIMEOUT are "" for no limit; SLOTS is the machine's parallel-builds
// and HOLDER "HOST PID", see remoteSlotScript); one line, so that --verbose traces
// show all of it. Framing, one line each unless said:
//
//	stdin  (hook → machine)  the wanted paths (the .drv and its inputs), space-separated
//	stdout (machine → hook)  "offload-has zstd", "offload-has gzip": decompressors it has
//	                         "offload-root NAME": each entry of ROOTS and of gcroots/tmp
//	                         the paths it lacks, one a line (`guix archive --missing`)
//	                         "offload-missing-end"
//	stdin                    only for a machine that fetches substitutes itself
//	                         (OFFLOAD_SUBSTITUTES): "substitute PATH...", missing inputs
//	stdout                   then, once `guix build --keep-going PATH...` fetched what
//	                         it could (substituteFuncs), the PATHs still missing, one a
//	                         line, "offload-missing-end"
//	stdin                    "COMP send|skip [STALE...]": the compression of both bulk
//	                         streams (zstd, gzip, or anything else for none), whether a
//	                         bundle follows, and the root names to remove first; then,
//	                         with "send", the bundle in COMP up to the end of stdin
//	stdout                   "offload-imported" (the bundle is in its store)
//	                         "offload-waiting-slot", about once a second, while every
//	                         one of the machine's own build slots is taken
//	                         "offload-building" (the build starts: from here on a
//	                         failure is the build's, and no other machine may take it)
//	                         "offload-alive" every second while the build runs
//	                         (aliveScript)
//	                         "offload-built" (the build succeeded), then the export of
//	                         the OUTPUTs in COMP up to the end of stdout
//
// A failed step ends the script with that step's exit status, so the last stdout line
// says how far it went and nothing is exported after a failed build. stderr carries
// the steps' messages, split by the lines "\037offload-phase TOKEN build" and
// "... export": what comes between them is the build log (relayed to fd 4 and
// classified); TOKEN, random per offload, keeps a builder from faking a split.
//
// GC roots. guix-daemon's collector (nix/libstore/gc.cc, findRoots) keeps every store
// path that a symlink under $state/gcroots points to, and follows one more symlink
// for a link there that points outside the store: that is how `guix build -r LINK`
// roots the build's outputs, with LINK under ROOTS and gcroots/auto/HASH -> LINK made
// by the daemon. The build itself takes -r: the same guix process as the build. The
// .drv (just imported, and protected by nothing until the build's daemon takes it
// as a temporary root) is rooted as Guix's own hook does (guix/scripts/offload.scm,
// register-gc-root): a symlink gcroots/tmp/ROOT.drv -> DRV, with no guix process,
// under $GUIX_STATE_DIRECTORY or /var/guix as the remote guix has it, when the daemon
// made gcroots there and the user may write in it (root, usually); otherwise by
// `guix build -d -r ROOTS/ROOT.drv`, which goes through the daemon. The roots are
// removed when the script exits, however it ends; the hook names, in its header line,
// those that earlier hooks of this host left behind when they were killed.
var sessionScript = strings.Join([]string{
	transferFuncs,
	`d=$1 r=$2 drv=$3 tok=$4 mst=$5 to=$6 ns=$7 who=$8`,
	`shift 8`,
	`set -f`,
	`state=${GUIX_STATE_DIRECTORY:-/var/guix}`,
	`tmp=$state/gcroots/tmp`,
	`bye() { set +f; rm -f -- "$d/$r.drv" "$d/$r" "$d/$r"-[0-9]* "$tmp/$r.drv"; }`,
	`trap bye EXIT`,
	`trap "exit 129" HUP`,
	`trap "exit 130" INT`,
	`trap "exit 141" PIPE`,
	`trap "exit 143" TERM`,
	`for c in zstd gzip; do if command -v "$c" >/dev/null 2>&1; then printf "` + toolPrefix + `%s\n" "$c"; fi; done`,
	// Names with a blank cannot be ours, and the framing is one name a line.
	`for dir in "$d" "$tmp"; do [ -d "$dir" ] || continue; set +f; for p in "$dir"/*; do n=${p##*/}; ` +
		`case $n in *["$IFS"]*) continue ;; esac; ` +
		`if [ -e "$p" ] || [ -L "$p" ]; then printf "` + rootPrefix + `%s\n" "$n"; fi; done; set -f; done`,
	`IFS= read -r want || { echo "offload: no paths from the hook" >&2; exit 2; }`,
	`printf "%s\n" $want | guix archive --missing || exit`,
	`echo ` + lineMissingEnd,
	substituteFuncs,
	`read -r comp send stale || { echo "offload: no header from the hook" >&2; exit 2; }`,
	`if [ "$comp" = ` + substituteWord + ` ]; then substitute $send $stale || exit; echo ` + lineMissingEnd + `; ` +
		`read -r comp send stale || { echo "offload: no header from the hook" >&2; exit 2; }; fi`,
	`rmstale() { for n in $stale; do set -- "$@" "$d/$n" "$tmp/$n"; done; rm -f -- "$@"; }`,
	`[ -z "$stale" ] || rmstale`,
	`if [ "$send" = send ]; then case $comp in zstd | gzip) import_z "$comp" || exit ;; *) guix archive --import >&2 || exit ;; esac; fi`,
	`echo ` + lineImported,
	`[ -d "$d" ] || mkdir -p "$d" || exit`,
	`if [ -d "$state/gcroots" ] && { [ -d "$tmp" ] || mkdir "$tmp" 2>/dev/null; } && ln -sf "$drv" "$tmp/$r.drv" 2>/dev/null; then :; ` +
		`else guix build -d -r "$d/$r.drv" "$drv" </dev/null >/dev/null || exit; fi`,
	remoteSlotScript,
	`echo ` + lineBuilding,
	`printf "\037offload-phase %s build\n" "$tok" >&2`,
	`guix build -r "$d/$r" --verbosity=3 ${mst:+"--max-silent-time=$mst"} ${to:+"--timeout=$to"} "$drv" </dev/null >/dev/null & b=$!`,
	aliveScript,
	`wait "$b"; st=$?; kill "$w" 2>/dev/null; wait "$w" 2>/dev/null; exec 9>&-; [ "$st" -eq 0 ] || exit "$st"`,
	`printf "\037offload-phase %s export\n" "$tok" >&2`,
	`echo ` + lineBuilt,
	`[ $# -gt 0 ] || exit 0`,
	`case $comp in zstd | gzip) export_z "$comp" "$@" ;; *) guix archive --export "$@" ;; esac`,
}, "; ")

// remoteSlotScript takes one of the machine's own build slots before the build, so
// that parallel-builds holds on the machine whatever the number of hosts that offload
// to it: the slot files are SLOTS-DIR/0 .. SLOTS-1, SLOTS-DIR being $OFFLOAD_SLOTS_DIR
// in the machine's environment or ROOTS/slots (relative to the remote user's home,
// like ROOTS). A slot is an flock(1) on fd 9 of the script's shell, so it lasts as
// long as the shell and what inherits fd 9: the `guix build` client, which lives as
// long as the build (the daemon's builders do not inherit it), and it is released
// after the build, before the export. A session that ends (the host died, its
// connection broke) frees its slot when its shell exits: at the build's next write to
// the closed session (SIGPIPE), or at its end. The holder writes "HOST PID DRV" in the
// slot for `offload status`; the file is opened for appending, so that a slot taken by
// someone else is never truncated. With every slot taken (other hosts took them since
// the probe) it waits, trying every 0.1 s and writing "offload-waiting-slot" on stdout
// every second or so, which also ends it (SIGPIPE) if the session is gone. A machine
// without flock has no shared slots: one line on stderr, and the build goes on.
// Probed by factsScript.
const remoteSlotScript = `if [ "$ns" -gt 0 ] 2>/dev/null; then if command -v flock >/dev/null 2>&1; then ` +
	`sd=${` + slotsDirEnv + `:-$d/slots}; [ -d "$sd" ] || mkdir -p "$sd" || exit; k=0; ` +
	`while :; do i=0; while [ "$i" -lt "$ns" ]; do exec 9>>"$sd/$i"; if flock -n 9; then break 2; fi; exec 9>&-; i=$((i + 1)); done; ` +
	`[ $((k % 10)) -ne 0 ] || echo ` + lineWaiting + `; k=$((k + 1)); sleep 0.1 2>/dev/null || sleep 1; done; ` +
	`: >"$sd/$i"; printf "%s %s\n" "$who" "$drv" >&9; ` +
	`else echo "offload: no flock(1) on this machine (util-linux): its parallel-builds is not shared with other hosts" >&2; fi; fi`

// aliveScript watches, while the build runs (pid $b), that the session is still
// there, writing "offload-alive" on stdout every second: when the host died or lost
// its connection, the write fails (sshd closes the session's stdout when the client's
// side of the channel is gone, even when ssh's connection sharing keeps the
// connection; it keeps draining stderr, so the build's log would not tell) and it
// stops the build, whose `guix build` holds the machine's slot (remoteSlotScript).
// Neither it nor its sleep keeps fd 9 or stdout beyond itself, so that neither the
// slot nor the session outlives the build. Its pid is $w.
const aliveScript = `{ trap '' PIPE; while sleep 1 >/dev/null 2>&1; do kill -0 "$b" 2>/dev/null || exit 0; echo ` + lineAlive + ` 2>/dev/null || break; done; kill "$b" 2>/dev/null; } 9>&- & w=$!`

// slotsDirEnv, in the machine's environment, puts its shared build slots elsewhere than
// under the remote user's home (remoteSlotScript), e.g. where several remote users
// share them.
const slotsDirEnv = "OFFLOAD_SLOTS_DIR"

// maxRootNames bounds the root names a machine may list (those of builds in flight).
const maxRootNames = 100_000

// The session script's stdout lines (see sessionScript); toolPrefix is the other.
const (
	rootPrefix     = "offload-root "
	lineMissingEnd = "offload-missing-end"
	lineImported   = "offload-imported"
	lineWaiting    = "offload-waiting-slot"
	lineBuilding   = "offload-building"
	lineBuilt      = "offload-built"
	lineAlive      = "offload-alive"
)

// toolPrefix starts the lines by which missingScript says which decompressors the
// machine has (store paths start with "/", so they cannot be mistaken for these).
const toolPrefix = "offload-has "

// missingScript asks which of the paths on stdin the machine lacks and which of zstd
// and gzip it has: the question the session script (offload.go) asks first, on its
// own, for `offload test`. One line, so that --verbose traces show all of it.
const missingScript = `for c in zstd gzip; do if command -v "$c" >/dev/null 2>&1; then echo "` + toolPrefix + `$c"; fi; done; exec guix archive --missing`

// transferFuncs defines the shell functions by which the session script (offload.go)
// decompresses the upload into `guix archive --import` and compresses `guix archive
// --export` of the outputs, with the machine's own zstd or gzip ($1). POSIX sh has no
// pipefail: the status of the pipeline's first command comes back through fd 4.
//
// import_z reads the compressed bundle on stdin; the import's failure comes first (when
// it stops reading, the decompressor's failure is only a consequence), and a
// decompressor that failed while the import succeeded still fails the whole. The
// import's stdout goes to stderr: the session's stdout is its framing.
//
// export_z writes the compressed export of its other arguments on stdout and returns
// the export's status, else the compressor's. One line, like the session script.
var transferFuncs = strings.Join([]string{
	`import_z() { st=$( { { "$1" -dc; echo $? >&4; } | guix archive --import >&2; } 4>&1 ); imp=$?; ` +
		`[ "$imp" -eq 0 ] || return "$imp"; ` +
		`[ "${st:-1}" -eq 0 ] || { echo "$1 -d: exit status ${st:-unknown}" >&2; return 1; }; }`,
	`export_z() { c=$1; shift; exec 3>&1; ` +
		`st=$( { { guix archive --export "$@"; echo $? >&4; } | "$c" -q -1 -c >&3; } 4>&1 ); cst=$?; ` +
		`[ "${st:-1}" -eq 0 ] || return "${st:-1}"; return "$cst"; }`,
}, "; ")

// factsScript is the one script that asks a machine about itself, in one round trip:
// for the hook's choice (load, cores, free space in the store, clock) and, with "full"
// as its second argument, for `offload status` (also kernel, architecture, host name,
// guix version; `guix --version` costs a process, so the hook does not ask for it).
// The memory available (MemAvailable, for placement's floor) comes as "mem MemAvailable:
// N kB", and as "mem" alone where /proc/meminfo has no such line.
// One "KEY VALUE" line per fact; the clock comes last, closest to the moment the answer
// reaches us. One line, so that --verbose traces show all of it.
//
// The machine's own build slots (see remoteSlotScript) come as "rslots HELD", HELD the
// slots someone holds among 0 .. SLOTS-1 (the third argument; every slot file when it
// is ""), and in full mode one "rslot I HOST PID DRV" line per held slot, from what its
// holder wrote; a machine without flock gives neither.
const factsScript = `s=$1 mode=$2 ns=$3; if [ "$mode" = full ]; then echo "kernel $(uname -s) $(uname -r)"; echo "arch $(uname -m)"; echo "host $(uname -n)"; echo "guix $(guix --version 2>/dev/null | head -n 1)"; fi; ` +
	`echo "cores $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)"; echo "load $(cat /proc/loadavg 2>/dev/null)"; echo "mem $(grep '^MemAvailable:' /proc/meminfo 2>/dev/null)"; echo "df $(df -Pk "$s" 2>/dev/null | tail -n 1)"; ` +
	`if command -v flock >/dev/null 2>&1; then sd=${` + slotsDirEnv + `:-` + rootsDir + `/slots}; set --; ` +
	`if [ -n "$ns" ]; then i=0; while [ "$i" -lt "$ns" ]; do set -- "$@" "$sd/$i"; i=$((i + 1)); done; elif [ -d "$sd" ]; then set -- "$sd"/[0-9]*; fi; ` +
	`n=0; for f; do [ -f "$f" ] && [ -r "$f" ] || continue; if ! (exec 9<"$f" && flock -n 9) 2>/dev/null; then n=$((n + 1)); ` +
	`if [ "$mode" = full ]; then echo "rslot ${f##*/} $(head -n 1 "$f")"; fi; fi; done; echo "rslots $n"; fi; ` +
	`echo "time $(date +%s.%N)"`

// substituteFuncs defines the session script's step that makes the machine fetch
// substitutes (see sessionScript): `substitute PATH...` fetches the PATHs with `guix
// build --keep-going` (a failed one does not stop the others; real Guix exits 0 even
// for a plain item no server has, so its status is only reported), then prints those
// still missing (`guix archive --missing`), as the first answer. No dry run first: for
// plain store items real Guix's build-notifier lists nothing and fetches them anyway
// (seen with a real guix-daemon), so what was fetched is what is no longer missing. The
// fetch's output goes to stderr: the session's stdout is its framing.
var substituteFuncs = `substitute() { ` +
	`guix build --keep-going "$@" </dev/null >&2 || echo "offload: guix build of substitutes exited with status $?" >&2; ` +
	`printf "%s\n" "$@" | guix archive --missing; }`

// substituteWord starts the hook's line that asks for substitutes: "substitute PATH...";
// lineMissingEnd ends the machine's answer.
const substituteWord = "substitute"

// bulkImportScript is the machine's side of a bulk upload on the daemon path: it says
// which decompressors it has (one line, toolPrefix and the names), reads the hook's
// choice (one line: zstd, gzip, or anything else for none), then imports the rest of
// stdin with `guix archive --import`, through import_z when compressed. The shell's
// `read` takes no byte beyond its line from a pipe.
var bulkImportScript = transferFuncs + `; printf "` + toolPrefix + `"; for c in zstd gzip; do if command -v "$c" >/dev/null 2>&1; then printf "%s " "$c"; fi; done; echo; ` +
	`read -r comp || exit 2; case $comp in zstd | gzip) import_z "$comp" ;; *) guix archive --import >&2 ;; esac`

// slotHoldScript holds one of the machine's shared build slots for the daemon path, run
// as `sh -c SCRIPT sh ROOTS SLOTS HOLDER DRV`: remoteSlotScript takes the slot (saying
// lineWaiting while every slot is taken), then it says lineBuilding and holds the slot
// (fd 9) until its stdin ends. Meanwhile a sampler without the slot's descriptor says
// the machine's MemAvailable (kB) every second as lineMem lines, from which the hook
// learns what the build took at most; its sleep holds neither the slot nor stdout, so
// that the session ends as soon as the sampler is killed. A machine without flock says
// lineNoFlock instead and ends.
var slotHoldScript = `d=$1 ns=$2 who=$3 drv=$4; ` +
	`command -v flock >/dev/null 2>&1 || { echo ` + lineNoFlock + `; exit 0; }; ` +
	remoteSlotScript + `; echo ` + lineBuilding + ` || exit; ` +
	`mem() { while read -r k v u; do if [ "$k" = MemAvailable: ]; then echo "` + lineMem + ` $v"; return 0; fi; done; return 1; }; ` +
	`(while mem </proc/meminfo && sleep 1 >/dev/null; do :; done) 9>&- 2>/dev/null & cat >/dev/null; kill $! 2>/dev/null`

// lineMem is slotHoldScript's sample of the machine's available memory, in kB.
const lineMem = "offload-mem"

// probeHoldScript is factsScript then slotHoldScript in one remote shell, run as
// `sh -c SCRIPT sh STORE ROOTS SLOTS HOLDER DRV`: the facts of a probe (the machine's
// slots counted before one is taken for us), lineFactsEnd, then the slot as
// slotHoldScript takes and holds it. The hook's choice reads the facts while the slot
// is being taken, so that a probe and the slot cost one shell start, not two in a row.
var probeHoldScript = probeFacts + `shift; ` + slotHoldScript

// probeGateScript is probeHoldScript with a gate between the facts and the slot, for a
// choice among several machines: after lineFactsEnd it reads one line, and takes and
// holds the slot only if that line is lineHold (the hook chose this machine); anything
// else, or the end of its stdin, ends it. The chosen machine's probe and slot then cost
// one shell start, and no machine holds a slot for a build that goes elsewhere.
var probeGateScript = probeFacts + `read -r go && [ "$go" = ` + lineHold + ` ] || exit 0; shift; ` + slotHoldScript

// probeFacts is the facts part of probeHoldScript and probeGateScript (the slots counted
// among the facts are the third argument's), ended by lineFactsEnd.
const probeFacts = `(set -- "$1" basic "$3"; ` + factsScript + `); echo ` + lineFactsEnd + ` || exit; `

// lineHold is what the hook tells probeGateScript when it chose the machine.
const lineHold = "offload-hold"

// lineFactsEnd ends the facts in probeHoldScript's answer.
const lineFactsEnd = "offload-facts-end"

// lineNoFlock is slotHoldScript's answer on a machine without flock(1).
const lineNoFlock = "offload-no-flock"
