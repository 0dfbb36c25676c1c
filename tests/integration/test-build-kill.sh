# A build SIGKILLed anywhere leaves nothing that looks finished and is
# wrong, and the next build cleans up after it:
#  - strace kills ingot at chosen renames and unlinks of a build of another
#    1.0.0 (other bytes) into a directory holding a finished 1.0.0: after
#    each kill every image there verifies against its manifest (and its
#    signature), so an old image never sits beside a new manifest; a
#    normal rerun then verifies, and leaves no partial, work directory or
#    helper process behind. The kill points are every rename and unlink
#    in the output directory (the final ones included), the first call,
#    one in the middle and the first and last after the image is in
#    place; walking all of them (some 370, most of them the removal of the
#    unpacked tree) would take minutes and find nothing more. Raw, signed,
#    and qcow2 over a raw of the same version (they share the manifest).
#  - a killed build's partials of another name and version, and of a
#    --check-reproducible run, are removed by the next build into that
#    directory; a live process's are not; non-reproducible images kept
#    for inspection stay.
#  - ingot killed while its faked-sysv runs: faked ends with it, and its
#    SysV message queues and semaphore go too.
source "$(dirname "$0")/lib.sh"

command -v strace >/dev/null || { echo "strace is not installed (scripts/setup installs it)"; exit 77; }

out=$work/images
cache=$work/cache
mkdir -p "$out"
# every ingot of this test (and so everything it runs) carries this mark,
# so a helper left behind is found without confusing it with others'
mark=INGOT_KILL_TEST=$$
ig() { env "$mark" "$INGOT" "$@"; }
build() { ig build -t busybox --cache-dir "$cache" -o "$out" "$@"; }

# processes carrying the mark that are still alive (zombies aside), after
# giving them a moment to go
marked_alive() {
        local p stat found
        for _ in $(seq 50); do
                found=
                for p in /proc/[0-9]*; do
                        [[ -r $p/environ ]] || continue
                        grep -qz "^$mark\$" "$p/environ" 2>/dev/null || continue
                        stat=$(sed 's/.*) //' "$p/stat" 2>/dev/null | cut -c1) || continue
                        [[ $stat == Z || $stat == X || -z $stat ]] && continue
                        found+="${p#/proc/} $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-80)"$'\n'
                done
                [[ -z $found ]] && return 1
                sleep 0.1
        done
        printf '%s' "$found"
        return 0
}
no_helpers_left() {
        local left
        if left=$(marked_alive); then
                fail "$1: processes outlived ingot: $left"
        fi
}

# every image in $out has its manifest, matches it, and its signature
# (when there is one) is the manifest's
images_verify() {
        local img m
        for img in "$out"/*.raw "$out"/*.qcow2; do
                [[ -e $img ]] || continue
                m=${img%.*}.manifest.json
                [[ -e $m ]] || fail "$1: '$img' has no manifest"
                "$INGOT" verify "$img" >"$work/v.out" 2>&1 || {
                        cat "$work/v.out" >&2
                        fail "$1: '$(basename "$img")' does not verify against its manifest"
                }
                if [[ -e $m.sig ]]; then
                        "$INGOT" verify --key "$work/k.pub" "$img" >"$work/v.out" 2>&1 || {
                                cat "$work/v.out" >&2
                                fail "$1: the signature beside '$(basename "$img")' is not its manifest's"
                        }
                fi
        done
}

no_leftovers() {
        local left
        left=$(ls -A "$out" | grep -E '\.partial-|^\.ingot-repro-[0-9]' || true)
        [[ -z $left ]] || fail "$1: left in the output directory: $left"
        left=$(ls -A "$cache/work" 2>/dev/null || true)
        [[ -z $left ]] || fail "$1: left in the work directory: $left"
}

# A and B: two different busybox 1.0.0 images
cp "$data/kickstart/minimal.ks" "$work/a.ks"
printf '%%include %s\n%%post\necho b >/etc/b-build\n%%end\n' "$data/kickstart/minimal.ks" >"$work/b.ks"
expect_exit 0 ig keygen -o "$work/k"
expect_exit 0 build -k "$work/a.ks" --version 1.0.0 --sign-key "$work/k.key"
mkdir -p "$work/a"
cp --sparse=always "$out"/busybox-1.0.0.* "$work/a/"
expect_exit 0 build -k "$work/b.ks" --version 1.0.0 --sign-key "$work/k.key"
cmp -s "$out/busybox-1.0.0.raw" "$work/a/busybox-1.0.0.raw" && fail "the two kickstarts give the same image"
no_leftovers "normal builds"

restore_a() {
        rm -f "$out"/busybox-1.0.0.*
        cp --sparse=always "$work/a"/busybox-1.0.0.* "$out/"
}

traced='rename,renameat,renameat2,unlink,unlinkat'
# strace counts invocations for when= per syscall, so the Nth of all the
# traced calls (as numbered in $work/calls) is the Kth of its own syscall:
# inject_at N prints "SYSCALL:signal=KILL:when=K"; past the last call, the
# last call's syscall one more time than it is made
inject_at() {
        local n=$1 total line sc k
        total=$(wc -l <"$work/calls")
        line=$(sed -n "$((n > total ? total : n))p" "$work/calls")
        sc=${line%%(*}
        k=$(head -n "$n" "$work/calls" | grep -c "^$sc(")
        ((n > total)) && k=$((k + 1))
        echo "$sc:signal=KILL:when=$k"
}

# kill_series NAME BUILD-ARGS...: with A in place, traces one build of B to
# number ingot's renames and unlinks, then kills a build at each chosen
# one, checking after each kill and after the rerun that follows it
kill_series() {
        local name=$1 n rc total points last_out
        shift
        restore_a
        env "$mark" strace -qq -o "$work/calls.log" -e trace=$traced "$INGOT" build -t busybox --cache-dir "$cache" \
                -o "$out" "$@" >/dev/null 2>"$work/trace.err" || { cat "$work/trace.err"; fail "$name: the traced build failed"; }
        grep -E "^($(tr , '|' <<<"$traced"))\(" "$work/calls.log" >"$work/calls"
        total=$(wc -l <"$work/calls")
        last_out=$(grep -n "\"$out/" "$work/calls" | tail -1 | cut -d: -f1)
        [[ -n $last_out ]] || fail "$name: the trace shows no rename into '$out'"
        points=$( {
                echo 1
                echo $((last_out / 2))
                grep -n "\"$out/" "$work/calls" | cut -d: -f1
                echo $((last_out + 1)) "$total" $((total + 1))
        } | tr ' ' '\n' | sort -nu)
        for n in $points; do
                restore_a
                rc=0
                # (the braces keep bash's "Killed" report out of the log)
                { env "$mark" strace -qq -o /dev/null -e trace=$traced -e inject="$(inject_at "$n")" \
                        "$INGOT" build -t busybox --cache-dir "$cache" -o "$out" "$@" \
                        >"$work/k.out" 2>"$work/k.err"; } 2>/dev/null || rc=$?
                if ((n > total)); then
                        [[ $rc -eq 0 ]] || { cat "$work/k.err"; fail "$name: the build past its last kill point exited $rc"; }
                else
                        [[ $rc -eq 137 || $rc -eq 9 ]] ||
                                { cat "$work/k.err"; fail "$name: call $n of $total ($(sed -n "${n}p" "$work/calls" | cut -c1-100)) did not kill it (exit $rc)"; }
                fi
                images_verify "$name, killed at call $n ($(sed -n "${n}p" "$work/calls" | cut -c1-100))"
                no_helpers_left "$name, killed at call $n"
                expect_exit 0 build "$@"
                images_verify "$name, the rerun after call $n"
                no_leftovers "$name, the rerun after call $n"
                no_helpers_left "$name, the rerun after call $n"
        done
        echo "  $name: killed at calls $(echo $points | tr '\n' ' ')of $total"
}

kill_series "raw, signed" -k "$work/b.ks" --version 1.0.0 --sign-key "$work/k.key"
cmp -s "$out/busybox-1.0.0.raw" "$work/a/busybox-1.0.0.raw" && fail "the last rerun left A in place"
kill_series "qcow2 over raw" -k "$work/b.ks" --version 1.0.0 --format qcow2
[[ -e $out/busybox-1.0.0.raw ]] && fail "a qcow2 build of 1.0.0 left the raw 1.0.0 beside its manifest"
rm -f "$out"/busybox-1.0.0.*

# ---- partials of other images, a live process's, --check-reproducible ----
# (every build sweeps, so each killed build is followed by a normal one)
# a build of 2.0.0 killed just before its image is renamed leaves a
# disk-sized partial; the next build, of 1.0.0, removes it and a dead
# process's, not a live one's
kill_at_image_rename() { # BUILD-ARGS...: exits 137 or 9, else fails
        local n rc=0
        env "$mark" strace -qq -o "$work/calls.log" -e trace=$traced "$INGOT" build -t busybox --cache-dir "$cache" \
                -o "$work/scratch" "$@" >/dev/null 2>&1 || fail "the traced build ($*) failed"
        rm -rf "$work/scratch"
        grep -E "^($(tr , '|' <<<"$traced"))\(" "$work/calls.log" >"$work/calls"
        n=$(grep -n '^rename(.*\.raw\.partial-' "$work/calls" | head -1 | cut -d: -f1)
        [[ -n $n ]] || fail "the traced build ($*) renamed no image"
        { env "$mark" strace -qq -o /dev/null -e trace=$traced -e inject="$(inject_at "$n")" \
                "$INGOT" build -t busybox --cache-dir "$cache" -o "$out" "$@" >/dev/null 2>&1; } 2>/dev/null || rc=$?
        [[ $rc -eq 137 || $rc -eq 9 ]] || fail "the build ($*) was not killed at call $n (exit $rc)"
}
kill_at_image_rename -k "$work/a.ks" --version 2.0.0
ls -A "$out" | grep -q '^\.busybox-2\.0\.0\.raw\.partial-[0-9]*$' || fail "the killed 2.0.0 build left no partial: $(ls -A "$out")"
[[ -e $out/busybox-2.0.0.raw ]] && fail "the killed 2.0.0 build left an image"
sleep 60 &
live=$!
truncate -s 1M "$out/.busybox-9.9.9.raw.partial-$live" "$out/.busybox-9.9.9.raw.partial-$live.qcow2"
sh -c 'exit 0' &
dead=$!
wait $dead
truncate -s 1M "$out/.busybox-9.9.8.manifest.json.partial-$dead" "$out/.busybox-9.9.8.raw.partial-$dead.qcow2" \
        "$out/.busybox-9.9.8.raw.partial-$dead.3"
expect_exit 0 build -k "$work/a.ks" --version 1.0.0
left=$(ls -A "$out" | grep -E '\.partial-' | sort | tr '\n' ' ')
[[ $left == ".busybox-9.9.9.raw.partial-$live .busybox-9.9.9.raw.partial-$live.qcow2 " ]] ||
        fail "after the next build the output directory holds: '$left' (only the live process's partials should stay)"
kill $live
wait $live 2>/dev/null || true
rm -f "$out"/.busybox-9.9.9.*
no_leftovers "after a killed build of 2.0.0"
no_helpers_left "after a killed build of 2.0.0"

# a --check-reproducible build killed in its first build leaves its
# directories; the next build removes them
kill_at_image_rename -k "$work/a.ks" --version 3.0.0 --check-reproducible
ls -A "$out" | grep -q '^\.ingot-repro-[0-9]*-1-' || fail "the killed --check-reproducible build left no directory: $(ls -A "$out")"
expect_exit 0 build -k "$work/a.ks" --version 1.0.0
no_leftovers "after a killed --check-reproducible build"

# images a --check-reproducible run keeps for inspection are not a killed
# run's leftovers: the next build leaves them
printf '%%include %s\n%%post\ncat /proc/uptime >/etc/build-time\n%%end\n' "$data/kickstart/minimal.ks" >"$work/clock.ks"
expect_exit 1 build -k "$work/clock.ks" --version 4.0.0 --check-reproducible
expect_err "not reproducible: .*both are kept: $out/\.ingot-repro-kept-1-[^/]*/busybox-4\.0\.0\.raw and $out/\.ingot-repro-kept-2-"
kept=$(ls -A "$out" | grep -c '^\.ingot-repro-kept-' || true)
[[ $kept -eq 2 ]] || fail "--check-reproducible kept $kept directories, not 2"
expect_exit 0 build -k "$work/a.ks" --version 1.0.0
[[ $(ls -A "$out" | grep -c '^\.ingot-repro-kept-' || true) -eq 2 ]] || fail "the next build removed the kept images"
rm -rf "$out"/.ingot-repro-kept-*
no_leftovers "after --check-reproducible"

# ---- ingot killed while its faked-sysv serves ----
ipc_keys() { awk 'NR > 1 { print $1 }' /proc/sysvipc/msg /proc/sysvipc/sem | sort; }
ipc_keys >"$work/ipc.before"
env "$mark" INGOT_TEST_STOP_AT=build-fakeroot "$INGOT" build -t busybox --cache-dir "$cache" -o "$out" \
        -k "$work/b.ks" --version 1.0.0 >/dev/null 2>"$work/stop.err" &
pid=$!
for _ in $(seq 300); do
        grep -q "test point build-fakeroot reached" "$work/stop.err" && break
        sleep 0.1
done
grep -q "test point build-fakeroot reached" "$work/stop.err" || { kill -9 $pid; cat "$work/stop.err"; fail "ingot never reached build-fakeroot"; }
faked=$(pgrep -P $pid -x faked-sysv) || { kill -9 $pid; fail "no faked-sysv runs as ingot's child"; }
ipc_keys >"$work/ipc.during"
new_keys=$(comm -13 "$work/ipc.before" "$work/ipc.during")
[[ -n $new_keys ]] || { kill -9 $pid; fail "faked-sysv made no SysV IPC objects"; }
kill -9 $pid
wait $pid 2>/dev/null || true
no_helpers_left "ingot killed beside faked-sysv"
for _ in $(seq 50); do
        left=$(comm -12 <(echo "$new_keys") <(ipc_keys))
        [[ -z $left ]] && break
        sleep 0.1
done
[[ -z $left ]] || fail "faked-sysv's IPC objects outlived it: $left"
expect_exit 0 build -k "$work/b.ks" --version 1.0.0
images_verify "the build after faked was killed"
no_leftovers "the build after faked was killed"
echo "build-kill: ok"
