#!/bin/sh
# Run the benchmarks of issue 7 and write BENCHMARKS.md (make bench).
# BENCH_QUICK=1 runs small sizes (for development; BENCHMARKS.md then says so).
# BENCH_FROM=FILE tabulates the saved output of an earlier run instead of running.
# Each benchmark reports figures as UNIT and their baseline, measured in the same run,
# as base-UNIT (see integration/bench_test.go); this script tabulates them with ratios.
set -eu
cd "$(dirname "$0")/.."

out=BENCHMARKS.md
raw=$(mktemp)
status=$(mktemp)
nix=$(mktemp)
trap 'rm -f "$raw" "$status" "$nix"' EXIT INT TERM

cmd="go test -count=1 -run '^\$' -bench . -benchtime 1x -timeout 60m ./integration"
mode=full
if [ "${BENCH_QUICK:-}" = 1 ]; then mode="quick (BENCH_QUICK=1)"; cmd="BENCH_QUICK=1 $cmd"; fi
echo "+ $cmd" >&2
if [ -n "${BENCH_FROM:-}" ]; then
	# Tabulate the saved output of an earlier run of $cmd instead of running it again.
	cp "$BENCH_FROM" "$raw"; echo 0 >"$status"
else
	{ sh -c "$cmd"; echo $? >"$status"; } | tee "$raw" >&2
fi
if [ "$(cat "$status")" != 0 ] || ! grep -q '^Benchmark' "$raw"; then
	echo "bench: go test failed; BENCHMARKS.md not written" >&2
	exit 1
fi

# The Nix section: each of our figures over Nix's own remote builds of the same shape
# (integration/bench_nix_test.go, scripts/nixfarm.sh), both from this run's output.
{
	echo "## Against Nix's remote builds"
	echo
	# The version the benchmarks logged from inside their farm: `nix-store --version` here
	# would open (and make) a store on the host's /nix.
	nixver=$(sed -n 's/.*nix version: .* \([0-9][^ ]*\)$/\1/p' "$raw" | head -n 1)
	echo "Ours ÷ Nix's, both measured in this run (Nix: Debian's nix-bin${nixver:+ $nixver})."
	echo
	echo "| case | ours ÷ Nix | figure | ours | Nix (median) | Nix min–max |"
	echo "|---|---:|---|---:|---:|---:|"
	awk '
	/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
		for (i = 5; i + 1 <= NF; i += 2) v[name " " $(i + 1)] = $i
		if (name ~ /^Nix/) nix = 1
	}
	# row prints one case: figure unit of benchmark ours over figure nunit of benchmark nix.
	function row(what, ours, unit, nix, nunit,    o, n, spread) {
		o = (ours " " unit) in v ? v[ours " " unit] : ""
		n = (nix " " nunit) in v ? v[nix " " nunit] : ""
		spread = ((nix " min-" nunit) in v) ? v[nix " min-" nunit] "–" v[nix " max-" nunit] : ""
		printf "| %s (%s ÷ %s) | %s | %s | %s | %s | %s |\n", what, ours, nix,
			(o != "" && n != "" && n + 0 != 0) ? sprintf("%.3g", o / n) : "n/a",
			unit == nunit ? unit : unit " ÷ " nunit,
			o == "" ? "not measured" : o, n == "" ? "not measured" : n, spread
	}
	END {
		row("tiny build, 100 ms shell start-up, daemon path", "TinyOffload/daemon-path", "wall-ms", "NixTiny", "wall-ms")
		row("tiny build, 100 ms shell start-up, shell path", "TinyOffload/shell-path", "wall-ms", "NixTiny", "wall-ms")
		row("six 3 s builds, 2 slots", "SixBuilds", "all-done-s", "NixSixBuilds", "all-done-s")
		row("Go src/ tree sent", "SourceTree", "up-s", "NixSourceTree", "send-s")
		row("Go src/ tree brought back", "SourceTree", "down-s", "NixSourceTree", "fetch-s")
		if (!nix) print "\nNo Nix figures in this run: its benchmarks skip unless run as root with nix-bin (outside CI; under CI they fail)."
	}' "$raw"
	cat <<'EOF'

How Nix is set up (scripts/nixfarm.sh, whose head says why each setting is there): a
build machine whose store is a temporary directory bind-mounted on /nix in a private
mount namespace, behind its own sshd on 127.0.0.1 (key-only, root, host key pinned in
a known_hosts file), where Nix's `ssh://` store runs `nix-store --serve --write`; the
local side is a second store on /nix in its own namespace, with `max-jobs = 0`, the
machine's line `ssh://root@127.0.0.1 SYSTEM KEY 2 1`, `builders-use-substitutes =
false`, no substituters, no sandbox and no build users (builds run as root on both
sides). Each case runs several times with new derivations (a nonce), median reported;
each figure is the wall time of `nix-store --realise` of derivations instantiated
beforehand, unless said otherwise.

- Tiny build: `echo hello > $out`, the machine's ssh sessions slowed by 100 ms as in
  TinyOffload (sshd's ForceCommand sleeps, then runs the command). Nix sends the
  derivation itself (no .drv on the machine) over one ssh session per build.
- Six builds: six derivations in one `nix-store --realise` call; Nix's local scheduler
  and its build hook decide what runs when. The hook opens its ssh connection to the
  machine before it answers, and Nix asks it about one build at a time, so builds
  start no faster than one ssh connection each; where a connection takes longer than a
  build they never overlap (max-concurrent-on-machine in the table above).
- Source tree: Go's `src/` (as SourceTree) added with `nix-store --add`. Sent: a build
  whose input is the tree and whose output is one line; brought back: a build that
  copies the tree (which the machine then has) to its output. The figure is the build
  hook's own copy phase ("copying dependencies to" / "copying outputs from", timed
  from its log lines as they arrive, `--log-format internal-json`);
  send-build-s / fetch-build-s above are the whole builds. The machine's store is
  garbage-collected before each run so the tree is sent each time.
EOF
} >"$nix"

mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
{
	echo "# Benchmarks"
	echo
	echo "Written by \`make bench\` (scripts/bench.sh) on $(date -u -r "$raw" '+%Y-%m-%d %H:%M UTC'); $mode run."
	echo "Every figure comes with a baseline measured in the same run; ratio = figure / baseline."
	echo
	echo "Machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $mem memory, kernel $(uname -r), $(go version | cut -d' ' -f3-)."
	echo
	echo "Command: \`$cmd\`"
	echo
	echo "| benchmark | figure | value | baseline | ratio |"
	echo "|---|---|---:|---:|---:|"
	awk '
	/^Benchmark/ {
		name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
		delete v; n = 0
		for (i = 5; i + 1 <= NF; i += 2) { v[$(i + 1)] = $i; if ($(i + 1) !~ /^base-/) order[++n] = $(i + 1) }
		for (j = 1; j <= n; j++) {
			u = order[j]; b = ("base-" u) in v ? v["base-" u] : ""
			r = (b != "" && b + 0 != 0) ? sprintf("%.3g", v[u] / b) : ""
			printf "| %s | %s | %s | %s | %s |\n", name, u, v[u], b, r
		}
	}' "$raw"
	echo
	cat <<'EOF'
What the figures are (integration/bench_test.go):

- Decision: time from writing the request line to reading `# accept/decline/postpone`
  through integration/daemon against the real binary; `first` is the first request
  (probes every machine), `median` the median over the run. The machines file holds one
  live machine (real sshd on 127.0.0.1) and N-1 entries on ports where nothing listens.
  Baseline: median of `true` run remotely by sshexec over a warm shared connection.
- Startup: a whole `offload --version` process, and a whole hook process that answers
  one decline and exits, against `true`.
- Transfer: a derivation with a random (incompressible) input closure offloaded by the
  hook (whole offload: request, probe, upload, build, download; upload: the hook's own
  "sent ... in Ns" line) against the bare `guix archive --export | ssh host guix archive
  --import` pipeline with the stand-in over the same sshd with the same ssh options and
  compression (on: machines.scm's default). Wire bytes are the export stream's size
  before ssh compression; the data is random, so compression cannot shrink it.
- Restore: `offload archive restore DIR < NAR` (storeio.Restore) against `nix-store
  --restore DIR < NAR` on the same nar (made by `nix-store --dump`), each a child
  process; peak RSS from its rusage.
- Concurrency: requests at once, 3 machines with parallel-builds 2, each build sleeping;
  postponed requests asked again every 200 ms on the same hook. Baseline for the time:
  the ideal (waves of 6 builds x build time). Max concurrency from the builders' own
  start/end lines (checked: never above 2). Hook peak RSS: the largest VmHWM seen while
  polling every 20 ms, against the same reading of a hook that only declined.
- Tiny offload: `echo hello > $out` from a builder script that is a text item, as a
  gexp's is in Guix (the machine lacks both the script and the .drv), offloaded end to end,
  probe included (the probe cache is emptied before each), to a machine whose shell
  start-up sleeps 100 ms (sshd's ForceCommand sleeps, then runs the command with the
  user's shell), with stand-ins that cost what Guix costs (each `guix` command its
  Guile start as measured on a real Guix, the stand-in daemon's signing helper once per
  connection); median wall time against the median `ssh machine true` through sshexec
  over a warm shared connection to the same machine. daemon-path: the hook speaks the
  machine's daemon protocol through ssh's socket forwarding; shell-path: the same with
  OFFLOAD_PATH=shell (one remote shell driving `guix archive` and `guix build`). ssh
  sessions per offload are counted in sshd's log ("Starting session"); guix processes
  run there and here in the stand-ins' logs (each a Guile start on a real machine).
- Local signing: an offload whose input is a fresh 1 MiB item, so that every run sends a
  signed bundle, with the stand-ins' Guix costs. Figure: the local daemon signs the
  export (the hook cannot read the host's key), which starts its signing helper;
  baseline: the hook signs with the key it read. The two alternate run by run.
- Shared machine: three hosts (hooks with their own state directories) each list one
  machine with parallel-builds 2 and ask for four sleeping builds at once; the machine's
  own build slots keep it at two builds at once (checked, from the builders' lines),
  where each host alone would allow two, six together. Baseline: the ideal (waves of 2
  builds x build time).
- Machines file: median time to read it, as the hook does for every request. Evaluator:
  offload's own evaluator on Guix System's generated file (append-map wrapper), against
  the manual's hand-written shape. Guix repl: the file with a virtual build machine's
  primitive-load entry, evaluated by `guix repl` (the stand-in, which runs Debian's
  Guile) and read back, against a bare `guile -c 0` started the same way. A real guix
  repl loads Guix's modules first and takes longer.
- Substitutes, on each path: a 200 MB random input closure (20 items) of which 150 MB
  (15 items) have a substitute on the machine, offloaded to a machine named in
  OFFLOAD_SUBSTITUTES (it fetches those itself: its `guix build` on the shell path, its
  daemon's BuildPaths on the daemon path; upload and wire bytes from the hook's "sent"
  line) against the same offload to a machine not named (everything uploaded). The
  stand-ins' substitute server is a directory on the machine, so fetching costs only
  its disk; over a real uplink the upload saved is worth more.
- Placement: a mix of short builds, one after another, on two machines of the same
  speed; each build's random input was built earlier on one of them (it holds it), and
  the other lacks it. Mix: the whole mix's wall time with placement, against the same
  mix on a farm set up the same way with OFFLOAD_PLACEMENT=off (speed and load only, as
  Guix's hook ranks; equal machines then share the work at random, so the baseline
  varies from run to run). Sent: MiB on the wire from the hook's "sent" lines;
  misplaced: builds that went to the machine lacking their input.
- PlacementLocal: the issue's case: short builds (a known name) whose big random input
  the one machine lacks, asked with WANTS-LOCAL 1. With placement the hook declines and
  the build runs here (the request, then the builder run directly, as the daemon would
  without its sandbox's set-up), against the same builds offloaded with
  OFFLOAD_PLACEMENT=off. Built here: how many were declined.
EOF
	echo
	cat "$nix"
} >"$out"
sed -n '/^| case/,/^$/p' "$nix" >&2
echo "bench: wrote $out" >&2
