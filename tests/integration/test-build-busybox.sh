# Build the busybox image as an unprivileged user (no root, no loop
# devices, no mounts), boot it under BIOS and UEFI to the ready line, and
# check that bad input and interrupted builds leave no image behind.
source "$(dirname "$0")/lib.sh"

user=ingottest
if ! id "$user" >/dev/null 2>&1; then
        # Debian's useradd also gives the user a subordinate uid range,
        # which the rootfs stage's user namespace maps.
        useradd --create-home "$user"
fi
chmod 0755 "$work"
out=$work/images
home=$(getent passwd "$user" | cut -d: -f6)
as_user() { setpriv --reuid="$user" --regid="$user" --init-groups env HOME="$home" XDG_CACHE_HOME="$home/.cache" "$@"; }
install -d -o "$user" "$out"

# The build, unprivileged.
start=$SECONDS
expect_exit 0 as_user "$INGOT" build -t busybox -k minimal --version 1.0.0 -o "$out"
echo "busybox build: $((SECONDS - start))s"; cat "$work/err"
[[ -f $out/busybox-1.0.0.raw ]] || fail "no image"
[[ $(stat -c %U "$out/busybox-1.0.0.raw") == "$user" ]] || fail "the image is not the user's"
ls -A "$out" | grep -v -e '^busybox-1.0.0.raw$' -e '^busybox-1.0.0.manifest.json$' && fail "stray files in the output directory"
[[ -f $out/busybox-1.0.0.manifest.json ]] || fail "no manifest beside the image"
expect_err 'rootfs'
expect_err 'disk'

# What was written is what was planned.
expect_image_matches_plan "$out/busybox-1.0.0.raw" -t busybox -k minimal --version 1.0.0

# Boot it both ways; the image is never written (snapshot).
sum=$(sha256sum <"$out/busybox-1.0.0.raw")
for fw in bios uefi; do
        expect_exit 0 "$INGOT" boot --firmware "$fw" --timeout 600 "$out/busybox-1.0.0.raw"
        expect_out 'ingot-ready name=busybox version=1.0.0'
        echo "boot $fw: $(grep -o 'ready in [0-9.]*s' "$work/out" || head -n 2 "$work/out")"
done
[[ $(sha256sum <"$out/busybox-1.0.0.raw") == "$sum" ]] || fail "booting changed the image"

# qcow2 output: converted, and it boots the same.
expect_exit 0 as_user "$INGOT" build -t busybox -k minimal --version 1.0.2 --format qcow2 -o "$out"
qemu-img info "$out/busybox-1.0.2.qcow2" | grep -q '^file format: qcow2' || fail "not a qcow2 image"
expect_exit 0 "$INGOT" boot --firmware bios --timeout 600 "$out/busybox-1.0.2.qcow2"
expect_out 'ingot-ready name=busybox version=1.0.2'
rm -f "$out/busybox-1.0.2.qcow2"

# A second build reuses the cached bootstrap.
rm -f "$out/busybox-1.0.0.raw"
expect_exit 0 as_user "$INGOT" build -t busybox -k minimal --version 1.0.1 -o "$out"
expect_err 'bootstrap from cache'

no_image_in() { ! ls -A "$1" | grep -Eq '\.(raw|qcow2)$|partial|manifest' || { ls -la "$1" >&2; fail "an image was left in $1"; }; }

# Bad input: each a clear error, non-zero, nothing left in the output dir.
bad=$work/bad
install -d -o "$user" "$bad"
printf '[Image]\nName=t\n[Rootfs]\nSource=tarball\nPath=/nonexistent/root.tar\n[Disk]\nSize=256M\n' >"$work/missing-tar.conf"
expect_exit 2 as_user "$INGOT" build -t "$work/missing-tar.conf" --version 1 -o "$bad"
expect_err "missing-tar\.conf:5: .*'/nonexistent/root\.tar'"
no_image_in "$bad"

printf 'rootpw --lock\npart / --size 4096\n' >"$work/too-big.ks"
expect_exit 2 as_user "$INGOT" build -t busybox -k "$work/too-big.ks" --version 1 -o "$bad"
expect_err 'too small for its partitions'
no_image_in "$bad"

printf 'rootpw --lock\n%%post --erroronfail\necho "the script says no" >&2\nexit 3\n%%end\n' >"$work/post-fails.ks"
expect_exit 1 as_user "$INGOT" build -t busybox -k "$work/post-fails.ks" --version 1 -o "$bad"
expect_err 'the script says no'
no_image_in "$bad"

printf 'rootpw --lock\npart / --size 1 --fstype ext4\n%%post\ndd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null\n%%end\n' >"$work/full.ks"
expect_exit 1 as_user "$INGOT" build -t busybox -k "$work/full.ks" --version 1 -o "$bad"
expect_err 'does not fit'
no_image_in "$bad"

# Interrupted builds: SIGINT, then SIGKILL, during the disk stage.
for sig in INT KILL; do
        # not through the as_user function: $! must be ingot itself
        setpriv --reuid="$user" --regid="$user" --init-groups env HOME="$home" XDG_CACHE_HOME="$home/.cache" \
                "$INGOT" build -t busybox -k minimal --version 2.0 -o "$bad" >"$work/int.out" 2>&1 &
        pid=$!
        for _ in $(seq 600); do
                ls -A "$bad" | grep -q partial && break
                sleep 0.05
        done
        ls -A "$bad" | grep -q partial || fail "never saw the disk stage start"
        kill -s "$sig" "$pid"
        wait "$pid" || true
        sleep 1
        [[ $sig == KILL ]] || no_image_in "$bad"
        ! ls -A "$bad" | grep -Eq '\.raw$' || fail "SIG$sig left an image"
done
expect_exit 0 as_user "$INGOT" build -t busybox -k minimal --version 2.0 -o "$bad"
expect_err 'bootstrap from cache'
[[ $(ls -A "$bad" | tr '\n' ' ') == "busybox-2.0.manifest.json busybox-2.0.raw " ]] || { ls -la "$bad"; fail "leftovers after the interrupted builds"; }
