# The plan for the shipped templates and kickstarts, compared with the
# expected files; identical bytes on a second run, from a name or a path.
# INGOT_UPDATE_EXPECTED=1 rewrites the expected files (review the diff!).
source "$(dirname "$0")/lib.sh"

cd "$data"
for combo in busybox:web-server busybox:minimal busybox: debian-12:web-server debian-12:minimal; do
        t=${combo%%:*} k=${combo#*:}
        args=(build --dry-run -t "templates/$t.conf" --version 1.0.0 --json)
        [[ -n $k ]] && args+=(-k "kickstart/$k.ks")
        exp=$expected/$t+${k:-none}.json

        expect_exit 0 "$INGOT" "${args[@]}"
        cp "$work/out" "$work/first"
        [[ ! -s $work/err ]] || { cat "$work/err" >&2; fail "$t+$k: the plan printed warnings"; }
        expect_exit 0 "$INGOT" "${args[@]}"
        cmp -s "$work/first" "$work/out" || fail "$t+$k: two runs printed different plans"

        if [[ ${INGOT_UPDATE_EXPECTED:-} == 1 ]]; then
                cp "$work/out" "$exp"
        fi
        diff -u "$exp" "$work/out" || fail "$t+$k: the plan differs from $(basename "$exp")"

        # the text form names the same partitions
        text_args=()
        for a in "${args[@]}"; do [[ $a == --json ]] || text_args+=("$a"); done
        expect_exit 0 "$INGOT" "${text_args[@]}"
        for uuid in $(jq -r '.disk.partitions[].uuid' "$work/first"); do
                expect_out "$uuid"
        done
done

# What the plan promises, checked on its own terms for the main example.
p=$expected/busybox+web-server.json
jq -e '
  .name == "busybox" and .version == "1.0.0" and
  ([.disk.partitions[].role] == ["biosboot", "esp", "root"]) and
  (.disk.partitions | all(.start % 1048576 == 0 and .size % 1048576 == 0)) and
  (.disk.partitions[-1].start + .disk.partitions[-1].size <= .disk.size - 16896) and
  (.disk.partitions[2].type_uuid == "4f68bce3-e8cd-4db1-96e7-fbcaf984b709") and
  (.kernel.cmdline | contains("root=PARTUUID=" + $p.disk.partitions[2].uuid)) and
  (.users | length) >= 1 and
  (.users | all(.password | test("^\\$") | not)) and
  (.services.enabled | index("nginx")) != null and
  (.scripts | length) >= 1 and
  (.outputs.image == "./busybox-1.0.0.raw")
' --argjson p "$(cat "$p")" "$p" >/dev/null || fail "busybox+web-server plan misses a promised fact"
# no password hash in any plan, in full or in part
! grep -hE '\$(y|6|5|2b|1)\$' "$expected"/*.json || fail "a plan shows a password hash"

# by name, from anywhere: the same layout and ids as by path
cd "$work"
expect_exit 0 "$INGOT" build --dry-run -t busybox -k web-server --version 1.0.0 --json
jq -S 'del(.inputs, .scripts[].file)' "$work/out" >"$work/byname"
jq -S 'del(.inputs, .scripts[].file)' "$p" | diff -u - "$work/byname" || fail "by name and by path differ"

# another version, another seed: every id changes, the layout does not
cd "$data"
expect_exit 0 "$INGOT" build --dry-run -t templates/busybox.conf -k kickstart/web-server.ks --version 1.0.1 --json
[[ $(jq -r .disk.uuid "$work/out") != "$(jq -r .disk.uuid "$p")" ]] || fail "the disk GUID did not change with the version"
[[ $(jq -c '[.disk.partitions[] | .start, .size]' "$work/out") == "$(jq -c '[.disk.partitions[] | .start, .size]' "$p")" ]] ||
        fail "the layout changed with the version"

# SOURCE_DATE_EPOCH from the environment wins over the template's
SOURCE_DATE_EPOCH=1234567890 expect_exit 0 "$INGOT" build --dry-run -t templates/busybox.conf --version 1.0.0 --json
jq -e '.source_date_epoch == 1234567890' "$work/out" >/dev/null || fail "SOURCE_DATE_EPOCH ignored"

# -o and --format shape the outputs
expect_exit 0 "$INGOT" build --dry-run -t templates/busybox.conf --version 2.0 -o /srv/out --format qcow2 --json
jq -e '.outputs == {"format": "qcow2", "image": "/srv/out/busybox-2.0.qcow2", "manifest": "/srv/out/busybox-2.0.manifest.json"}' \
        "$work/out" >/dev/null || fail "outputs"
