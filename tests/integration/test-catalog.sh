# The catalog against a store: push (record fields), an idempotent re-push,
# an incremental push of a one-file change that sends only the changed
# blocks, pull byte for byte, a corrupt block named by pull, a version
# overwrite and a tampered image refused with the store unchanged,
# channels (show NAME:CHANNEL, two promotes at once), two pushes at once,
# deregister + gc (never a live image's block), and a push killed with
# SIGKILL that leaves no available record and resumes sending only what is
# missing.
#
# The store comes from $STORE (default: file://$work/store). The few checks
# that look into the store behind ingot's back go through the store_*
# functions below; a test for another backend defines its own before
# sourcing this file (see the "hooks" block).
if ! declare -F fail >/dev/null; then
        source "$(dirname "$0")/lib.sh"
fi

BS=1048576
out=$work/images
cache=$work/cache
export XDG_CACHE_HOME=$work/xdg
STORE=${STORE:-file://$work/store}

# ---- hooks: direct access to the store (file:// here) ----
if ! declare -F store_keys >/dev/null; then
        store_dir=${STORE#file://}
        # store_keys PREFIX: the keys under PREFIX, sorted
        store_keys() { (cd "$store_dir" && find "$1" -type f 2>/dev/null | grep -v '~' | sort) || true; }
        # store_snapshot: every key with its content's hash, sorted
        store_snapshot() { (cd "$store_dir" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }
        store_read() { cat "$store_dir/$1"; }
        store_write() { cat >"$store_dir/$1"; }
        store_has() { [[ -f $store_dir/$1 ]]; }
        # slow_push ARGS...: ingot push, each stored object delayed ~0.5s
        # (strace delays every rename, which is how the file store
        # publishes an object)
        slow_push() {
                command -v strace >/dev/null || { echo "SKIP: no strace to slow the push down"; exit 77; }
                exec strace -f -qq -o /dev/null -e trace=rename,renameat,renameat2 \
                        -e inject=rename,renameat,renameat2:delay_exit=500000 "$INGOT" push "$@" --store "$STORE"
        }
fi

ig() { "$INGOT" "$@" --store "$STORE"; }
count_blocks() { store_keys blocks/ | wc -l; }

# block_hashes IMAGE: SHA-256 of each non-zero 1 MiB block, sorted, unique
block_hashes() {
        local f=$1 n i zero
        zero=$(head -c $BS /dev/zero | sha256sum | cut -d' ' -f1)
        n=$((($(stat -c %s "$f") + BS - 1) / BS))
        for ((i = 0; i < n; i++)); do
                dd if="$f" bs=$BS skip=$i count=1 status=none | sha256sum | cut -d' ' -f1
        done | grep -vx "$zero" | sort -u
}

# ---- the images: 1.0.0, 1.0.1 (one file changed), a big one, two more ----
# a.ks adds 48 MB of deterministic, varied data, so the images have
# content the version bump leaves alone: the build seed (and with it every
# filesystem UUID) follows the version and the kickstart, so each block
# holding ext4 or FAT metadata changes with any rebuild. The changed file
# keeps its size: a new file could shift where the payload lands.
ks() {
        cat "$data/kickstart/minimal.ks"
        printf '%%post --erroronfail\nseq 1 9000000 | head -c 50331648 >/payload\n'
        printf 'echo "release %s" >/etc/ingot-release\n%%end\n' "$1"
}
ks A >"$work/a.ks"
ks B >"$work/b.ks"
{ cat "$work/a.ks"; printf '%%post --erroronfail\ndd if=/dev/urandom of=/big bs=1M count=48 2>/dev/null\n%%end\n'; } >"$work/big.ks"
{ cat "$work/a.ks"; printf '%%post --erroronfail\ndd if=/dev/urandom of=/c bs=1M count=8 2>/dev/null\n%%end\n'; } >"$work/c.ks"
build() { "$INGOT" build -t busybox --cache-dir "$cache" -o "$out" "$@"; }
start=$SECONDS
expect_exit 0 build -k "$work/a.ks" --version 1.0.0
expect_exit 0 build -k "$work/b.ks" --version 1.0.1
expect_exit 0 build -k "$work/big.ks" --version 1.1.0
expect_exit 0 build -k "$work/c.ks" --version 2.0.0
expect_exit 0 build -k "$work/c.ks" --version 2.0.1
echo "builds: $((SECONDS - start))s"
img1=$out/busybox-1.0.0.raw img2=$out/busybox-1.0.1.raw big=$out/busybox-1.1.0.raw

# ---- push 1.0.0: an id, a record with the EC2 fields, available ----
expect_exit 0 ig push "$img1" --tag team=web --tag tier=test
id1=$(cat "$work/out")
[[ $id1 =~ ^ami-[0-9a-f]{17}$ ]] || fail "push printed '$id1', not an ami id"
expect_err 'blocks: [0-9]+ total, 0 already stored, [0-9]+ sent'
store_read "images/$id1.json" >"$work/rec1.json"
jq -e --arg id "$id1" --argjson size "$(stat -c %s "$img1")" \
        --arg digest "$(jq -r .image.digest "$out/busybox-1.0.0.manifest.json")" '
  .image_id == $id and .name == "busybox" and .version == "1.0.0" and .state == "available" and
  .architecture == "x86_64" and .virtualization_type == "hvm" and .hypervisor == "xen" and
  .boot_mode == "uefi-preferred" and .root_device_name == "/dev/xvda" and .root_device_type == "ebs" and
  .image_type == "machine" and .description == "BusyBox on the Debian kernel, for tests" and
  (.block_device_mappings[0] | .device_name == "/dev/xvda" and (.ebs | (.snapshot_id | test("^snap-[0-9a-f]{17}$"))
     and .volume_size_gib == 1 and .volume_type == "gp3" and .delete_on_termination == true and .encrypted == false)) and
  (.creation_date | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$")) and
  .deprecation_time == null and .tags == {team: "web", tier: "test"} and
  .image.size == $size and .image.digest == $digest and .image.block_size == 1048576 and
  .image.block_list == "blocklists/\($id).json" and .manifest.name == "busybox" and .signature == null and
  .os_release == {IMAGE_ID: "busybox", IMAGE_VERSION: "1.0.0"}
' "$work/rec1.json" >/dev/null || { cat "$work/rec1.json"; fail "the record of $id1 lacks fields"; }
store_read "images/$id1.json" | jq -r .image.block_list_sha256 >"$work/want"
[[ $(store_read "blocklists/$id1.json" | sha256sum | cut -d' ' -f1) == "$(cat "$work/want")" ]] ||
        fail "block_list_sha256 does not match the block list"
[[ $(store_read "names/busybox/1.0.0.json" | jq -r .image_id) == "$id1" ]] || fail "names/busybox/1.0.0.json"
n1=$(block_hashes "$img1" | wc -l)
[[ $(count_blocks) -eq $n1 ]] || fail "$(count_blocks) blocks stored, the image has $n1 distinct non-zero blocks"

# the same again: the same id, nothing sent
expect_exit 0 ig push "$img1" --json
jq -e --arg id "$id1" '.image_id == $id and .already_available and .blocks_sent == 0 and .bytes_sent == 0' \
        "$work/out" >/dev/null || { cat "$work/out"; fail "a re-push was not a no-op"; }

# bad input: tags, a qcow2, a missing manifest (exit 2)
expect_exit 2 ig push "$img1" --tag aws:x=1
expect_err "aws:"
expect_exit 2 ig push "$img1" --tag "k=$(printf 'v%.0s' {1..257})"
expect_exit 2 ig push "$work/nonexistent.raw"
qemu-img convert -O qcow2 "$img1" "$work/q.qcow2"
expect_exit 2 ig push "$work/q.qcow2" --manifest "$out/busybox-1.0.0.manifest.json"
expect_err "qemu-img convert"

# ---- 1.0.1: only the blocks that differ go ----
block_hashes "$img1" >"$work/h1"
block_hashes "$img2" >"$work/h2"
want=$(comm -13 "$work/h1" "$work/h2" | wc -l)
expect_exit 0 ig push "$img2" --json
id2=$(jq -r .image_id "$work/out")
sent=$(jq -r .blocks_sent "$work/out")
echo "1.0.1: $sent blocks sent of $(wc -l <"$work/h2"); $want differ from 1.0.0"
[[ $sent -eq $want ]] || { cat "$work/out"; fail "1.0.1 sent $sent blocks, $want differ"; }
# what differs is the changed file's block plus the blocks holding
# filesystem metadata (which the version's UUIDs reach): a bound that does
# not grow with the data
[[ $want -ge 1 && $want -lt $(wc -l <"$work/h2") && $want -le 16 ]] ||
        fail "$want of $(wc -l <"$work/h2") blocks differ for a one-file change"
[[ $(jq -r .blocks_already_stored "$work/out") -eq $(($(wc -l <"$work/h2") - want)) ]] ||
        fail "the already-stored count is off"
[[ $id2 != "$id1" ]] || fail "1.0.1 got 1.0.0's id"

# ---- pull both: byte for byte, verified; a second pull is a no-op ----
expect_exit 0 ig pull "$id1"
p1=$(cat "$work/out")
[[ $p1 == "$XDG_CACHE_HOME/ingot/images/$id1.raw" ]] || fail "pulled to '$p1'"
cmp "$img1" "$p1" || fail "the pulled 1.0.0 differs"
cmp "$out/busybox-1.0.0.manifest.json" "$XDG_CACHE_HOME/ingot/images/$id1.manifest.json" ||
        fail "the pulled manifest differs"
expect_exit 0 "$INGOT" verify "$p1"
expect_exit 0 ig pull busybox@1.0.1 -o "$work/p2.raw" --json
jq -e '.cached == false and .blocks_fetched > 0' "$work/out" >/dev/null || fail "pull --json"
cmp "$img2" "$work/p2.raw" || fail "the pulled 1.0.1 differs"
[[ $(du -k "$work/p2.raw" | cut -f1) -lt $(($(stat -c %s "$work/p2.raw") / 1024 / 2)) ]] ||
        fail "the pulled image is not sparse"
expect_exit 0 ig pull "$id1" --json
jq -e '.cached == true and .blocks_fetched == 0' "$work/out" >/dev/null || fail "a second pull fetched again"

# ---- a corrupt block is named, and nothing is left behind ----
blk=$(comm -13 "$work/h1" "$work/h2" | head -1)
store_read "blocks/$blk" >"$work/saved-block"
{ head -c 100 "$work/saved-block"; printf 'X'; tail -c +102 "$work/saved-block"; } | store_write "blocks/$blk"
expect_exit 1 ig pull "$id2" -o "$work/p2b.raw"
expect_err "block [0-9]+ \\(blocks/$blk\\) is corrupt in the store"
[[ ! -e $work/p2b.raw && ! -e $work/p2b.raw.partial ]] || fail "a failed pull left a file behind"
store_write "blocks/$blk" <"$work/saved-block"

# ---- versions are immutable; tampered images are refused; the store is unchanged ----
store_snapshot >"$work/before"
cp "$img2" "$work/other.raw"
jq --indent 2 '.version = "1.0.0"' "$out/busybox-1.0.1.manifest.json" >"$work/other.manifest.json"
expect_exit 1 ig push "$work/other.raw"
expect_err "busybox@1.0.0 already exists as $id1 with other bytes: versions are immutable"
cp "$img1" "$work/tampered.raw"
printf 'X' | dd of="$work/tampered.raw" bs=1 seek=$((200 * 1048576)) conv=notrunc status=none
cp "$out/busybox-1.0.0.manifest.json" "$work/tampered.manifest.json"
expect_exit 1 ig push "$work/tampered.raw"
expect_err "does not match its manifest"
store_snapshot >"$work/after"
cmp -s "$work/before" "$work/after" || { diff "$work/before" "$work/after"; fail "a refused push changed the store"; }

# ---- channels ----
expect_exit 0 ig promote "$id1" stable
expect_exit 0 ig show busybox:stable --json
jq -e --arg id "$id1" '.image_id == $id and .channels == ["stable"]' "$work/out" >/dev/null ||
        fail "show busybox:stable"
expect_exit 0 ig show busybox@1.0.1
expect_out "^image_id: +$id2"
expect_exit 2 ig show 'not a ref'
expect_exit 1 ig show busybox:nonexistent
expect_exit 0 ig images
expect_out "^$id1 +busybox +1.0.0 +available .* stable$"
for i in 1 2 3; do
        ig promote "$id1" beta >"$work/pa.$i" 2>&1 &
        pa=$!
        ig promote "$id2" beta >"$work/pb.$i" 2>&1 &
        pb=$!
        wait $pa && ra=0 || ra=$?
        wait $pb && rb=0 || rb=$?
        store_read channels/busybox/beta.json >"$work/beta.json"
        jq -e --arg a "$id1" --arg b "$id2" '(.image_id == $a or .image_id == $b) and (.generation | type) == "number"' \
                "$work/beta.json" >/dev/null || { cat "$work/beta.json"; fail "channel beta is torn"; }
        # a compare-and-swap: both won one after the other (two generations),
        # or one lost, changed nothing and was told who won (exit 1)
        ga=$(grep -o 'generation [0-9]*' "$work/pa.$i" | head -1 || true)
        gb=$(grep -o 'generation [0-9]*' "$work/pb.$i" | head -1 || true)
        held=$(jq -r .image_id "$work/beta.json")
        if ((ra == 0 && rb == 0)); then
                [[ $ga != "$gb" ]] || fail "two promotes both wrote $ga: a lost update"
        elif ((ra == 0 && rb == 1)); then
                grep -q "which won" "$work/pb.$i" && [[ $held == "$id1" ]] || fail "the loser was not told: $(cat "$work/pb.$i")"
        elif ((ra == 1 && rb == 0)); then
                grep -q "which won" "$work/pa.$i" && [[ $held == "$id2" ]] || fail "the loser was not told: $(cat "$work/pa.$i")"
        else
                fail "concurrent promotes exited $ra and $rb: $(cat "$work/pa.$i" "$work/pb.$i")"
        fi
done

# ---- deprecate ----
expect_exit 0 ig deprecate "$id2" --at 2000-01-01T00:00:00Z
expect_exit 0 ig images --json
jq -e --arg id "$id2" '.[] | select(.image_id == $id) | .state == "deprecated" and
  .deprecation_time == "2000-01-01T00:00:00.000Z"' "$work/out" >/dev/null || fail "deprecate"
expect_exit 2 ig deprecate "$id2" --at yesterday

# ---- two pushes of different images at once ----
ig push "$out/busybox-2.0.0.raw" >"$work/c1" 2>"$work/c1.err" &
c1=$!
ig push "$out/busybox-2.0.1.raw" >"$work/c2" 2>"$work/c2.err" &
c2=$!
wait $c1 || fail "concurrent push 2.0.0 failed: $(cat "$work/c1.err")"
wait $c2 || fail "concurrent push 2.0.1 failed: $(cat "$work/c2.err")"
for v in 2.0.0 2.0.1; do
        expect_exit 0 ig pull "busybox@$v" -o "$work/c-$v.raw"
        cmp "$out/busybox-$v.raw" "$work/c-$v.raw" || fail "concurrently pushed $v differs"
done

# ---- a push killed midway: no available record; the rerun sends only what is missing ----
b0=$(count_blocks)
slow_push "$big" >"$work/k.out" 2>"$work/k.err" &
kp=$!
# the id, derived as the catalog does (a pinned derivation)
kid=ami-$(printf 'ingot-ami-v1\n%s\n%s\n%s' busybox 1.1.0 "$(jq -r .image.digest "$out/busybox-1.1.0.manifest.json")" |
        sha256sum | cut -c1-17)
for ((i = 0; i < 600; i++)); do
        [[ $(count_blocks) -ge $((b0 + 2)) ]] && break
        kill -0 $kp 2>/dev/null || fail "the slowed push ended before it could be killed: $(cat "$work/k.err")"
        sleep 0.05
done
# the ingot process itself (under strace, or a subshell): killing a tracer
# would let its tracee run on
child=$kp
for ((i = 0; i < 4; i++)); do
        [[ $(cat "/proc/$child/comm" 2>/dev/null) == ingot ]] && break
        child=$(pgrep -P "$child" | head -1 || true)
        [[ -n $child ]] || break
done
[[ -n $child && $(cat "/proc/$child/comm" 2>/dev/null) == ingot ]] || fail "no ingot process to kill under $kp"
kill -KILL "$child"
wait "$kp" 2>/dev/null || true
# uploads already on their way to a remote store may still land
sleep 2
b1=$(count_blocks)
store_has "images/$kid.json" || fail "the killed push left no pending record (id $kid)"
[[ $(store_read "images/$kid.json" | jq -r .state) == pending ]] || fail "the killed push's record is not pending"
expect_exit 1 ig pull "$kid" -o "$work/k.raw"
expect_err "pending"
expect_exit 0 ig push "$big" --json
jq -e --arg id "$kid" '.image_id == $id and .state == "available"' "$work/out" >/dev/null || fail "resume"
resent=$(jq -r .blocks_sent "$work/out")
b2=$(count_blocks)
echo "killed push: $((b1 - b0)) blocks stored before the kill, $resent sent by the rerun"
[[ $b1 -gt $b0 && $resent -eq $((b2 - b1)) && $resent -lt $((b2 - b0)) ]] ||
        fail "the rerun sent $resent blocks (before: $b0, after the kill: $b1, at the end: $b2)"
expect_exit 0 ig pull "$kid" -o "$work/k.raw"
cmp "$big" "$work/k.raw" || fail "the resumed image differs"

# ---- deregister: pull refused; gc frees its own blocks, never a live one's ----
expect_exit 0 ig promote "$id2" edge
expect_exit 0 ig deregister "$id2"
store_has channels/busybox/edge.json && fail "deregister left a channel pointing at $id2"
expect_exit 1 ig pull "$id2" -o "$work/p2c.raw"
expect_err "deregistered"
expect_exit 1 ig promote "$id2" stable
expect_exit 0 ig images
grep -q "$id2" "$work/out" && fail "images lists a deregistered image"
expect_exit 0 ig images --all
expect_out "^$id2 .* deregistered"
expect_exit 0 ig gc --dry-run --grace 0 --json
jq -e '.dry_run and .blocks_deleted > 0' "$work/out" >/dev/null || fail "gc --dry-run found nothing"
store_snapshot >"$work/before"
expect_exit 0 ig gc --dry-run --grace 0
store_snapshot >"$work/after"
cmp -s "$work/before" "$work/after" || fail "gc --dry-run changed the store"
expect_exit 0 ig gc --grace 3600 --json
jq -e '.blocks_deleted == 0' "$work/out" >/dev/null || fail "gc deleted blocks younger than the grace period"
expect_exit 0 ig gc --grace 0 --json
gone=$(jq -r .blocks_deleted "$work/out")
live=$(for f in "$img1" "$big" "$out/busybox-2.0.0.raw" "$out/busybox-2.0.1.raw"; do block_hashes "$f"; done | sort -u)
only2=$(comm -23 "$work/h2" <(echo "$live") | wc -l)
echo "gc: $gone blocks deleted, $only2 were 1.0.1's alone"
[[ $gone -eq $only2 && $only2 -ge 1 ]] || fail "gc deleted $gone blocks, 1.0.1 alone had $only2"
for h in $live; do store_has "blocks/$h" || fail "gc deleted blocks/$h, which a live image needs"; done
store_has "blocklists/$id2.json" && fail "gc kept the deregistered image's block list"
rm -f "$work/p1again.raw"
expect_exit 0 ig pull "$id1" -o "$work/p1again.raw"
cmp "$img1" "$work/p1again.raw" || fail "1.0.0 differs after gc"

echo "test-catalog: ok"
