# Shared by the bench/*.sh scripts: the ingot under test ($1, default the
# CI install), a scratch directory, timing and the result table.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ingot=${1:-$top/build/ci/inst/bin/ingot}
export INGOT_DATA_PATH=$top
w=$(mktemp -d /var/tmp/ingot-bench.XXXXXX)
trap 'rm -rf "$w"' EXIT
rows=()
: "${SECS_FORMAT:=%.1f}"

secs() { # seconds of a command, its output kept in $w/last.log
        local t0 t1
        t0=$(date +%s.%N)
        "$@" >"$w/last.log" 2>&1 || { cat "$w/last.log" >&2; echo "bench: '$*' failed" >&2; exit 1; }
        t1=$(date +%s.%N)
        # shellcheck disable=SC2059
        printf "$SECS_FORMAT\n" "$(echo "$t1 - $t0" | bc)"
}
stage() { grep -E "^ingot: $1 " "$w/last.log" | awk '{print $3}' | tr -d s; }
row() { rows+=("$(printf '%-62s %9s  %s' "$1" "$2" "${3:-}")"); }
