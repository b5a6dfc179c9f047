#!/bin/sh
# Run the fault drills of issue 7 (make chaos) and print, for each drill, PASS/FAIL and
# what it checked (the tests' "drill:" lines). OFFLOAD_CHAOS_SHORT=1 runs each drill once
# or small (what CI runs). Exit status: go test's.
set -u
cd "$(dirname "$0")/.."

raw=$(mktemp)
status=$(mktemp)
trap 'rm -f "$raw" "$status"' EXIT INT TERM

echo "+ OFFLOAD_CHAOS=1 OFFLOAD_CHAOS_SHORT=${OFFLOAD_CHAOS_SHORT:-} go test -count=1 -timeout 30m -v -run Chaos ./integration" >&2
{ OFFLOAD_CHAOS=1 go test -count=1 -timeout 30m -v -run Chaos ./integration; echo $? >"$status"; } >"$raw" 2>&1
rc=$(cat "$status")

# Drill lines and failure messages, then the verdict of every test and subtest.
awk '
	/^=== RUN/ { next }
	/^[ \t]*--- (PASS|FAIL|SKIP)/ {
		v = $2; sub(/:$/, "", v)
		printf "%-4s %s %s\n", v, $3, $4
		next
	}
	/drill: / { l = $0; sub(/^[ \t]*/, "", l); sub(/^[a-z_]+\.go:[0-9]+: /, "", l); print "      " l; next }
	/^[ \t]+[a-z_]+_test\.go:[0-9]+: / { l = $0; sub(/^[ \t]*/, "", l); print "      ERROR " l; next }
	/^(FAIL|ok|panic)/ { print }
' "$raw"
if [ "$rc" != 0 ]; then
	echo "chaos: go test exited $rc; full output:" >&2
	cat "$raw" >&2
fi
exit "$rc"
