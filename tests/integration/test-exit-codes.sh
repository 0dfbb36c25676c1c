# Exit codes where bad input meets a broken store: a corrupt store block or
# record is the store's failure, exit 1 on pull and on deploy alike (deploy
# stops before QEMU); a deployment file that is not there, a malformed
# reference or store URL are bad input, exit 2.
source "$(dirname "$0")/lib.sh"

export XDG_CACHE_HOME=$work/xdg
store=$work/store
STORE=file://$store
out=$work/images
ig() { "$INGOT" "$@" --store "$STORE"; }

expect_exit 0 "$INGOT" build -t busybox -k minimal --version 1.0.0 -o "$out"
expect_exit 0 ig push "$out/busybox-1.0.0.raw"
id=$(cat "$work/out")
[[ $id =~ ^ami-[0-9a-f]{17}$ ]] || fail "push printed '$id', not an ami id"
printf '[Deployment]\nName=codes\nImage=%s\nBootTimeout=30\n' "$id" >"$work/codes.deploy"
deploy() { ig deploy "$work/codes.deploy" --state-dir "$work/state" "$@"; }
no_qemu() {
        [[ -z $(find "$work/state" -name '*.pid' 2>/dev/null) ]] || fail "$1: deploy started an instance"
}

# bad input: exit 2
expect_exit 2 ig deploy "$work/nonexistent.deploy" --state-dir "$work/state"
expect_err "cannot read deployment file '$work/nonexistent\.deploy'"
printf '[Deployment]\nName=codes\nImage=busybox@-x\n' >"$work/badref.deploy"
expect_exit 2 ig deploy "$work/badref.deploy" --state-dir "$work/state"

# a corrupt block: exit 1 on pull and on deploy, which names it before QEMU
blk=$(cd "$store" && find blocks -type f | sort | head -1)
cp "$store/$blk" "$work/saved-block"
printf 'X' | dd of="$store/$blk" bs=1 seek=100 conv=notrunc status=none
expect_exit 1 ig pull "$id" -o "$work/p.raw"
expect_err "is corrupt in the store"
expect_exit 1 deploy
expect_err "is corrupt in the store"
no_qemu "a corrupt block"
cp "$work/saved-block" "$store/$blk"

# a corrupt record (found when the reference is resolved, or against the
# block list when pulled): exit 1 on both as well
cp "$store/images/$id.json" "$work/saved-record"
echo '[]' >"$store/images/$id.json"
expect_exit 1 ig pull "$id" -o "$work/p.raw"
expect_err "'images/$id\.json' in the store is not a valid image record"
expect_exit 1 deploy
expect_err "'images/$id\.json' in the store is not a valid image record"
no_qemu "a record that is no JSON object"
jq '.image.size = 4096' "$work/saved-record" >"$store/images/$id.json"
expect_exit 1 ig pull "$id" -o "$work/p.raw"
expect_err "the block list is for [0-9]+ bytes, the record says 4096"
expect_exit 1 deploy
expect_err "the block list is for [0-9]+ bytes, the record says 4096"
no_qemu "a record of another size"
cp "$work/saved-record" "$store/images/$id.json"

# and intact, the pull works (the deploy would boot: test-deploy does that)
expect_exit 0 ig pull "$id" -o "$work/p.raw"
cmp "$out/busybox-1.0.0.raw" "$work/p.raw" || fail "the pulled image differs"
echo "exit codes: ok"
