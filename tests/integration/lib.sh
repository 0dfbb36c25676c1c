# Helpers for the integration tests: assertions that print what they saw.
set -euo pipefail

data=$INGOT_PREFIX/share/ingot
expected=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/expected
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
        echo "FAIL: $*" >&2
        exit 1
}

# expect_exit CODE CMD...: runs CMD, keeps stdout/stderr in $work/out, $work/err
expect_exit() {
        local want=$1 rc=0
        shift
        "$@" >"$work/out" 2>"$work/err" || rc=$?
        if [[ $rc -ne $want ]]; then
                echo "--- stdout" >&2; cat "$work/out" >&2
                echo "--- stderr" >&2; cat "$work/err" >&2
                fail "'$*' exited $rc, expected $want"
        fi
}

# expect_err REGEX: the last command's stderr matches
expect_err() {
        grep -Eq -- "$1" "$work/err" || { cat "$work/err" >&2; fail "stderr does not match '$1'"; }
}

expect_out() {
        grep -Eq -- "$1" "$work/out" || { cat "$work/out" >&2; fail "stdout does not match '$1'"; }
}

# expect_one_line: stderr is exactly one line (hints aside)
expect_one_error_line() {
        local n
        n=$(grep -vc '^hint: ' "$work/err" || true)
        [[ $n -eq 1 ]] || { cat "$work/err" >&2; fail "expected one error line, got $n"; }
}
