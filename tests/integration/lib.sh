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

# expect_image_matches_plan IMAGE BUILD-ARGS...: ingot inspect of IMAGE shows
# the partition table and filesystems the plan of BUILD-ARGS promises.
expect_image_matches_plan() {
        local img=$1
        shift
        expect_exit 0 "$INGOT" build --dry-run --json "$@"
        cp "$work/out" "$work/plan.json"
        expect_exit 0 "$INGOT" inspect --json --no-os "$img"
        cp "$work/out" "$work/inspect.json"
        jq -en --slurpfile p "$work/plan.json" --slurpfile i "$work/inspect.json" '
          ($p[0].disk) as $pd | ($i[0].disk) as $id |
          $id.table == "gpt" and $pd.uuid == $id.uuid and $pd.size == $id.size and
          ([$pd.partitions[] | {number, role, name, type_uuid, uuid, start, size}] ==
           [$id.partitions[] | {number, role, name, type_uuid, uuid, start, size}]) and
          ([$pd.partitions[] | select(.fstype == "ext4") | {fstype, fs_uuid, label: .label}] ==
           [$id.partitions[] | select(.fstype == "ext4") | {fstype, fs_uuid, label: .label}]) and
          ([$pd.partitions[] | select(.fstype == "vfat") | .volume_id] ==
           [$id.partitions[] | select(.fstype == "vfat") | .volume_id]) and
          ([$id.partitions[] | select(.role == "esp") | .attribute_names[]] | index("legacy-bios-bootable") != null)
        ' >/dev/null || { cat "$work/inspect.json"; fail "'$img': the partition table differs from the plan"; }
}
