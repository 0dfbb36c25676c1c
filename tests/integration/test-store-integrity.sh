# Store integrity under concurrency and kills: no interleaving or kill point
# this test can produce may leave an available record that does not pull
# byte for byte, two records for one name@version, a lost channel update,
# a finished-looking file with the wrong content, or a leftover that
# nothing removes.
#
# How it steers ingot: INGOT_TEST_STOP_AT=POINT makes ingot stop itself
# (SIGSTOP) at a named point of its protocol (push-locked, push-claimed,
# push-pending, push-checked, gc-planned, promote-read, pull-verified,
# lock-wait); the test runs something beside it there, then SIGCONTs or
# SIGKILLs it. On file:// stores, strace also kills ingot at the Nth call
# of each of rename, link and unlink and their *at forms (every step by
# which the file store and the cache publish or remove something), one
# syscall at a time, N walked until the command runs past its last call.
#
# The store comes from $STORE (default file://$work/store); a test for
# another backend defines the store_* hooks and STORE_KIND before sourcing
# this file (test-store-integrity-s3.sh).
if ! declare -F fail >/dev/null; then
        source "$(dirname "$0")/lib.sh"
fi
source "$(dirname "$0")/deploylib.sh"

out=$work/images
cache=$work/cache
export XDG_CACHE_HOME=$work/xdg
STORE=${STORE:-file://$work/store}
STORE_KIND=${STORE_KIND:-file}
export INGOT_LOCK_WAIT=120

if ! declare -F store_keys >/dev/null; then
        store_dir=${STORE#file://}
        store_keys() { (cd "$store_dir" && find "$1" -type f 2>/dev/null | grep -v '~' | sort) || true; }
        store_read() { cat "$store_dir/$1"; }
        store_write() { cat >"$store_dir/$1"; }
        store_rm() { rm -f "$store_dir/$1"; }
        store_has() { [[ -f $store_dir/$1 ]]; }
        # temporaries and leftovers: anything with '~' but put_cond's locks
        store_leftovers() { (cd "$store_dir" && find . -type f -name '*~*' ! -name '*~lock') || true; }
        # gc with every unlink (how the file store deletes) 0.2 s late
        slow_gc() {
                exec strace -qq -o /dev/null -e trace=unlink,unlinkat -e inject=unlink,unlinkat:delay_enter=200000 \
                        "$INGOT" gc --grace 0 --store "$STORE"
        }
fi

ig() { "$INGOT" "$@" --store "$STORE"; }
build() { "$INGOT" build -t busybox --cache-dir "$cache" -o "$out" "$@"; }

# stopped_at PID POINT: waits until PID stopped itself at POINT (its
# stderr, in $work/PID.err, says so)
wait_stopped() {
        local pid=$1 point=$2
        for ((i = 0; i < 600; i++)); do
                if [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == T ]] &&
                        grep -q "test point $point reached" "$work/$pid.err" 2>/dev/null; then
                        return 0
                fi
                kill -0 "$pid" 2>/dev/null || { cat "$work/$pid.err" >&2; fail "pid $pid ended before test point $point"; }
                sleep 0.05
        done
        fail "pid $pid did not reach test point $point"
}

# start_at POINT ARGS...: runs ingot ARGS --store STORE in the background, stopped at POINT;
# sets $bg to its pid (its output in $work/$bg.out and .err)
bgn=0
start_at() {
        local point=$1
        bgn=$((bgn + 1))
        shift
        INGOT_TEST_STOP_AT=$point "$INGOT" "$@" --store "$STORE" >"$work/bg$bgn.out" 2>"$work/bg$bgn.err" &
        bg=$!
        # named by pid from here on
        ln -sf "$work/bg$bgn.err" "$work/$bg.err"
        ln -sf "$work/bg$bgn.out" "$work/$bg.out"
        wait_stopped "$bg" "$point"
}

# every_available_pulls: each available record pulls and matches the image
# it was pushed from ($out/busybox-VERSION.raw, or $alt/… for the versions
# built twice)
every_available_pulls() {
        local k rec id version state src n=0
        for k in $(store_keys images/); do
                rec=$(store_read "$k")
                id=$(jq -r .image_id <<<"$rec") version=$(jq -r .version <<<"$rec") state=$(jq -r .state <<<"$rec")
                [[ $state == available ]] || continue
                rm -f "$work/check.raw"
                expect_exit 0 ig pull "$id" -o "$work/check.raw"
                src=$out/busybox-$version.raw
                [[ -f ${src_of[$version]:-} ]] && src=${src_of[$version]}
                cmp -s "$src" "$work/check.raw" || fail "$id (busybox@$version) is available but does not pull as pushed"
                n=$((n + 1))
        done
        # one record per name@version
        local dup
        dup=$(for k in $(store_keys images/); do store_read "$k" | jq -r '"\(.name)@\(.version)"'; done | sort | uniq -d)
        [[ -z $dup ]] || fail "two records for $dup"
        echo "  $n available images pull byte for byte"
}

no_leftovers() {
        local l
        l=$(store_leftovers)
        [[ -z $l ]] || fail "left in the store after gc: $l"
        [[ -z $(store_keys locks/) ]] || fail "locks left in the store: $(store_keys locks/)"
        # (no helper outliving a build is test-build-kill's check: a pgrep
        # here would see other tests' builds on the machine)
        return 0
}

declare -A src_of

# ---- images: versions that share most blocks (one lineage) ----
start=$SECONDS
for v in 1 2 3 4 5 6 7 8 9 10; do
        expect_exit 0 build -k "$data/kickstart/minimal.ks" --version "1.0.$v"
done
# two different images of one version: the second with another file
mkdir -p "$work/alt"
printf '%%include %s\n%%post\necho other >/etc/other\n%%end\n' "$data/kickstart/minimal.ks" >"$work/other.ks"
for v in 5.0.0 5.0.1 5.0.2 5.0.3; do
        expect_exit 0 build -k "$data/kickstart/minimal.ks" --version "$v"
        expect_exit 0 "$INGOT" build -t busybox --cache-dir "$cache" -o "$work/alt" -k "$work/other.ks" --version "$v"
done
echo "builds: $((SECONDS - start))s"

# ---- 1. gc beside a push that reuses a deregistered image's blocks ----
# 1.0.1 deregistered; 1.0.2 shares almost all its blocks (old, so the
# grace would not protect them). gc cannot run while the push is between
# its presence check and its available record, and a push cannot check
# presence while gc is between its plan and its deletes.
expect_exit 0 ig push "$out/busybox-1.0.1.raw"
id101=$(cat "$work/out")
expect_exit 0 ig deregister "$id101"
start_at push-checked push "$out/busybox-1.0.2.raw"
p=$bg
expect_exit 1 env INGOT_LOCK_WAIT=2 "$INGOT" gc --grace 0 --store "$STORE"
expect_err "locked by push"
ig gc --grace 0 >"$work/gc1.out" 2>"$work/gc1.err" &
g=$!
sleep 1
kill -0 $g 2>/dev/null || fail "gc ran while a push held the store: $(cat "$work/gc1.err")"
kill -CONT $p
wait $p || fail "the push stopped at push-checked failed: $(cat "$work/$p.err")"
wait $g || fail "gc after the push failed: $(cat "$work/gc1.err")"
grep -q "waiting for push" "$work/gc1.err" || fail "gc did not say it waited for the push"
every_available_pulls

# the other way round: gc stopped between its plan and its deletes
expect_exit 0 ig deregister "$(cat "$work/$p.out")"
start_at gc-planned gc --grace 0
g=$bg
ig push "$out/busybox-1.0.3.raw" >"$work/p2.out" 2>"$work/p2.err" &
p=$!
sleep 1
kill -0 $p 2>/dev/null || fail "the push did not wait for gc: $(cat "$work/p2.err")"
[[ -z $(store_keys names/busybox/1.0.3.json) ]] || fail "the push claimed its name while gc held the store"
kill -CONT $g
wait $g || fail "gc failed: $(cat "$work/$g.err")"
wait $p || fail "the push after gc failed: $(cat "$work/p2.err")"
grep -q "waiting for gc" "$work/p2.err" || fail "the push did not say it waited for gc"
every_available_pulls

# push x gc loops, deletes slowed down (file store: strace delays every
# unlink by 0.2 s; S3: the proxy answers every DELETE 0.2 s late)
for v in 4 5 6; do
        expect_exit 0 ig deregister "$(jq -r .image_id < <(store_read "names/busybox/1.0.$((v - 1)).json"))"
        slow_gc >"$work/sg.out" 2>"$work/sg.err" &
        g=$!
        expect_exit 0 ig push "$out/busybox-1.0.$v.raw"
        wait $g || fail "slowed gc failed: $(cat "$work/sg.err")"
        expect_exit 0 ig gc --grace 0
        every_available_pulls
done
no_leftovers
echo "push x gc: ok"

# ---- 2. a live image whose block list is missing stops gc ----
id106=$(jq -r .image_id < <(store_read names/busybox/1.0.6.json))
store_read "blocklists/$id106.json" >"$work/bl.json"
store_rm "blocklists/$id106.json"
nb=$(store_keys blocks/ | wc -l)
expect_exit 1 ig gc --grace 0
expect_err "no block list"
[[ $(store_keys blocks/ | wc -l) -eq $nb ]] || fail "gc deleted blocks although a live block list is missing"
store_write "blocklists/$id106.json" <"$work/bl.json"
echo "garbage" | store_write "blocklists/$id106.json"
expect_exit 1 ig gc --grace 0
[[ $(store_keys blocks/ | wc -l) -eq $nb ]] || fail "gc deleted blocks although a live block list is corrupt"
store_write "blocklists/$id106.json" <"$work/bl.json"
echo "missing or corrupt block list: gc refuses"

# ---- 3. two pushes of one version with different bytes: exactly one wins ----
round=0
for v in 5.0.0 5.0.1 5.0.2; do
        ig push "$out/busybox-$v.raw" >"$work/a.out" 2>"$work/a.err" &
        a=$!
        ig push "$work/alt/busybox-$v.raw" >"$work/b.out" 2>"$work/b.err" &
        b=$!
        wait $a && ra=0 || ra=$?
        wait $b && rb=0 || rb=$?
        if ((ra == 0 && rb == 1)); then
                win=$(cat "$work/a.out") loser=b
        elif ((ra == 1 && rb == 0)); then
                win=$(cat "$work/b.out") loser=a src_of[$v]=$work/alt/busybox-$v.raw
        else
                fail "two pushes of busybox@$v exited $ra and $rb: $(cat "$work/a.err" "$work/b.err")"
        fi
        grep -q "already exists as $win with other bytes" "$work/$loser.err" ||
                fail "the losing push did not name the winner $win: $(cat "$work/$loser.err")"
        round=$((round + 1))
done
# deterministic: one stopped right after its claim, the other runs through
start_at push-claimed push "$work/alt/busybox-5.0.3.raw"
a=$bg
expect_exit 1 ig push "$out/busybox-5.0.3.raw"
expect_err "already exists as ami-"
kill -CONT $a
wait $a || fail "the push that claimed 5.0.3 first failed: $(cat "$work/$a.err")"
src_of[5.0.3]=$work/alt/busybox-5.0.3.raw
expect_exit 0 ig images --name busybox --all --json
[[ $(jq '[.[] | select(.version == "5.0.3")] | length' "$work/out") -eq 1 ]] || fail "two records for busybox@5.0.3"
every_available_pulls
echo "concurrent pushes of one version: one wins, $((round + 1)) rounds"

# ---- 4. concurrent promotes: no lost update ----
id501=$(jq -r .image_id < <(store_read names/busybox/5.0.1.json))
id502=$(jq -r .image_id < <(store_read names/busybox/5.0.2.json))
expect_exit 0 ig promote "$id501" stable
start_at promote-read promote "$id501" stable
a=$bg
expect_exit 0 ig promote "$id502" stable
gen=$(store_read channels/busybox/stable.json | jq .generation)
kill -CONT $a
wait $a && ra=0 || ra=$?
[[ $ra -eq 1 ]] || fail "a promote that read a stale generation exited $ra: $(cat "$work/$a.err")"
grep -q "promoted to $id502 (generation $gen) by a concurrent promote, which won" "$work/$a.err" ||
        fail "the losing promote was not told who won: $(cat "$work/$a.err")"
[[ $(store_read channels/busybox/stable.json | jq -r .image_id) == "$id502" ]] || fail "the loser changed the channel"
for i in 1 2 3 4 5; do
        ig promote "$id501" beta >"$work/pa" 2>&1 &
        a=$!
        ig promote "$id502" beta >"$work/pb" 2>&1 &
        b=$!
        wait $a && ra=0 || ra=$?
        wait $b && rb=0 || rb=$?
        ga=$(grep -o 'generation [0-9]*' "$work/pa" | head -1 || true)
        gb=$(grep -o 'generation [0-9]*' "$work/pb" | head -1 || true)
        ((ra + rb <= 1)) || fail "both promotes failed: $(cat "$work/pa" "$work/pb")"
        [[ $ra -ne 0 || $rb -ne 0 || $ga != "$gb" ]] || fail "two promotes both wrote $ga: a lost update"
done
# deregister drops a channel only if nobody promoted it meanwhile
expect_exit 0 ig promote "$id501" edge
expect_exit 0 ig deregister "$id501"
[[ -z $(store_keys channels/busybox/edge.json) ]] || fail "deregister left a channel naming a dead image"
echo "concurrent promotes: ok"

# ---- 5. kill points: SIGKILL at every named point, then a rerun ----
# each followed by the rerun and the checks; kill_at POINT CMD...
kill_at() {
        local point=$1
        shift
        start_at "$point" "$@"
        kill -KILL "$bg"
        wait "$bg" 2>/dev/null || true
}
declare -A version_of=([push-locked]=1.0.7 [push-claimed]=1.0.8 [push-pending]=1.0.9 [push-checked]=1.0.10)
for point in push-locked push-claimed push-pending push-checked; do
        v=${version_of[$point]}
        kill_at "$point" push "$out/busybox-$v.raw"
        every_available_pulls
        expect_exit 0 ig push "$out/busybox-$v.raw"
        every_available_pulls
done
kill_at gc-planned gc --grace 0
expect_exit 0 ig gc --grace 0
every_available_pulls
no_leftovers

# pull -o over an older image: killed after verifying, before the renames
expect_exit 0 ig pull busybox@1.0.8 -o "$work/p.raw"
kill_at pull-verified pull busybox@1.0.9 -o "$work/p.raw"
if [[ -e $work/p.raw ]]; then
        expect_exit 0 "$INGOT" verify "$work/p.raw"
fi
expect_exit 0 ig pull busybox@1.0.9 -o "$work/p.raw"
cmp "$out/busybox-1.0.9.raw" "$work/p.raw" || fail "pull -o after a kill holds the wrong image"
ls -a "$work" | grep -q '\.partial-' && fail "pull left a partial: $(ls -a "$work" | grep partial)"
echo "kill points (test points): ok"

# ---- 6. pull -o: the old file is never proof; a failed verification leaves nothing ----
expect_exit 0 ig pull busybox@1.0.8 -o "$work/q.raw"
# the manifest of 1.0.9 beside the bytes of 1.0.8, as a kill used to leave them
cp "$out/busybox-1.0.9.manifest.json" "$work/q.manifest.json"
cp --sparse=always "$out/busybox-1.0.8.raw" "$work/q.raw"
truncate -s "$(stat -c %s "$out/busybox-1.0.9.raw")" "$work/q.raw"
expect_exit 0 ig pull busybox@1.0.9 -o "$work/q.raw"
cmp "$out/busybox-1.0.9.raw" "$work/q.raw" || fail "pull trusted size + manifest and kept the old bytes"

# ---- 7. the cache: a flipped byte is never booted ----
id109=$(jq -r .image_id < <(store_read names/busybox/1.0.9.json))
expect_exit 0 ig pull "$id109"
cached=$(cat "$work/out")
expect_exit 0 ig pull "$id109"
expect_err "already pulled"
off=$(($(stat -c %s "$cached") / 2))
printf '\x5a' | dd of="$cached" bs=1 seek=$off conv=notrunc status=none
expect_exit 0 ig pull "$id109"
expect_err "does not match its manifest: pulling it again"
cmp "$out/busybox-1.0.9.raw" "$cached" || fail "the tampered cache was kept"
# tampered again, and the store cannot repair it: deploy refuses before QEMU
printf '\x5a' | dd of="$cached" bs=1 seek=$off conv=notrunc status=none
hidden=$(store_read "blocklists/$id109.json" | jq -r '[.blocks[] | select(. != null)][0]')
store_read "blocks/$hidden" >"$work/hidden.block"
store_rm "blocks/$hidden"
state=$work/state
printf '[Deployment]\nName=tamper\nImage=%s\nBootTimeout=60\n' "$id109" >"$work/tamper.deploy"
expect_exit 1 "$INGOT" deploy "$work/tamper.deploy" --store "$STORE" --state-dir "$state"
expect_err "is missing from the store"
[[ -z $(instance_qemus "$state") ]] || { kill_instances "$state"; fail "deploy started QEMU on a tampered cache"; }
store_write "blocks/$hidden" <"$work/hidden.block"
echo "cache: a tampered image is pulled again or refused, never booted"

# ---- 8. records are cross-checked ----
id108=$(jq -r .image_id < <(store_read names/busybox/1.0.8.json))
store_read "images/$id108.json" >"$work/rec.json"
jq '.version = "1.0.9"' "$work/rec.json" | store_write "images/$id108.json"
expect_exit 1 ig pull "$id108" -o "$work/x.raw"
expect_err "does not follow from its name, version and digest"
jq '.image.digest = "0000000000000000000000000000000000000000000000000000000000000000"' "$work/rec.json" |
        store_write "images/$id108.json"
expect_exit 1 ig pull "$id108" -o "$work/x.raw"
expect_err "is not a SHA-256"
store_write "images/$id108.json" <"$work/rec.json"
store_write "images/ami-00000000000000001.json" <"$work/rec.json"
expect_exit 1 ig pull ami-00000000000000001 -o "$work/x.raw"
expect_err "misplaced copy"
expect_exit 1 ig images --name busybox
[[ $(grep -c "$id108" "$work/out") -eq 1 ]] || fail "a copied record lists the image twice"
store_rm images/ami-00000000000000001.json
# a record too large to be ours is refused before it is read whole
head -c $((66 * 1048576)) /dev/zero | tr '\0' ' ' | store_write "images/ami-00000000000000002.json"
expect_exit 1 ig pull ami-00000000000000002 -o "$work/x.raw"
expect_err "larger than"
store_rm images/ami-00000000000000002.json
echo "records: edited, zeroed, copied and oversized ones refused"

if [[ $STORE_KIND == file ]]; then
        # ---- 9. file store: SIGKILL at every rename, link and unlink ----
        # push, pull and gc, each walked through its kill points (the Nth
        # such call of the ingot process); after each kill the store and
        # the output must hold nothing wrong, and a rerun must succeed
        # strace counts when=N per syscall, so each syscall gets its own
        # walk: kill at its 1st call, 2nd, ... until the command runs past
        # its last one
        kill_table() { # NAME CHECK CMD...: every kill point of CMD, a check after each
                local name=$1 check=$2 n rc total=0 sc
                shift 2
                for sc in rename renameat renameat2 link linkat unlink unlinkat; do
                        n=1
                        while :; do
                                rc=0
                                # (the braces keep bash's "Killed" report out of the log)
                                { strace -qq -o /dev/null -e trace=$sc -e inject=$sc:signal=KILL:when=$n \
                                        "$@" >"$work/kt.out" 2>"$work/kt.err"; } 2>/dev/null || rc=$?
                                "$check"
                                [[ $rc -eq 137 || $rc -eq 9 ]] || break
                                n=$((n + 1)) total=$((total + 1))
                                ((n < 400)) || fail "$name: still killed after 400 calls of $sc"
                        done
                        [[ $rc -eq 0 ]] || fail "$name ran through its $sc kill points but exited $rc: $(cat "$work/kt.err")"
                done
                echo "  $name: $total kill points"
        }
        expect_exit 0 build -k "$work/other.ks" --version 2.0.0
        # what a kill may leave: 2.0.0 not available, or available and whole
        check_store() {
                local rec
                rec=$(store_read names/busybox/2.0.0.json 2>/dev/null | jq -r .image_id) || return 0
                [[ $(store_read "images/$rec.json" 2>/dev/null | jq -r .state) == available ]] || return 0
                rm -f "$work/c2.raw"
                "$INGOT" pull "$rec" -o "$work/c2.raw" --store "$STORE" >/dev/null 2>&1 ||
                        fail "2.0.0 is available but does not pull"
                cmp -s "$out/busybox-2.0.0.raw" "$work/c2.raw" || fail "2.0.0 is available but pulls other bytes"
        }
        kill_table "push 2.0.0" check_store "$INGOT" push "$out/busybox-2.0.0.raw" --store "$STORE"
        every_available_pulls
        check_pull() {
                if [[ -e $work/k.raw ]]; then
                        "$INGOT" verify "$work/k.raw" >/dev/null 2>&1 || fail "pull left '$work/k.raw' not matching its manifest"
                fi
        }
        expect_exit 0 ig pull busybox@1.0.8 -o "$work/k.raw"
        kill_table "pull -o" check_pull "$INGOT" pull busybox@2.0.0 -o "$work/k.raw" --store "$STORE"
        cmp "$out/busybox-2.0.0.raw" "$work/k.raw" || fail "pull -o after its kill points holds the wrong image"
        ls -a "$work" | grep -q '\.partial-' && fail "pull left a partial"
        expect_exit 0 ig deregister busybox@2.0.0
        kill_table "gc" check_store "$INGOT" gc --grace 0 --store "$STORE"
        every_available_pulls
        no_leftovers
fi
echo "test-store-integrity ($STORE_KIND): ok"
