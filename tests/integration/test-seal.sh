# The seal on the busybox image: the version stamp in every place, a root
# that stays read-only inside the running guest while /var and /tmp are
# writable and services run, and builds that are bit-for-bit reproducible
# (different directories, different times, a cold cache) with
# --check-reproducible agreeing and naming the difference when there is one.
source "$(dirname "$0")/lib.sh"

out=$work/images
mkdir -p "$out"

# A test-only start script prints what the guest sees, before the ready line.
cat >"$work/seal.ks" <<KS
%include $data/kickstart/minimal.ks
services --enabled=httpd

%post --erroronfail
cat >/etc/rcS.d/S99facts <<'SH'
#!/bin/sh
[ "\$1" = start ] || exit 0
facts=\$(
if touch /ingot-probe 2>/tmp/err; then echo "fact: root-write allowed"; else echo "fact: root-write \$(cat /tmp/err)"; fi
if mount -o remount,rw / 2>/tmp/err; then echo "fact: remount allowed"; else echo "fact: remount refused"; fi
grep ' / ' /proc/mounts | grep -q ' ro[, ]' && echo "fact: root-mount ro"
touch /var/probe && echo "fact: var-write ok"
touch /tmp/probe && echo "fact: tmp-write ok"
pidof httpd >/dev/null && echo "fact: httpd running"
. /etc/os-release && echo "fact: os-release \$IMAGE_ID \$IMAGE_VERSION"
)
printf '\n%s\n' "\$facts" >/dev/console
SH
chmod 0755 /etc/rcS.d/S99facts
%end
KS

expect_exit 0 "$INGOT" build -t busybox -k "$work/seal.ks" --version 1.0.0 -o "$out"
img=$out/busybox-1.0.0.raw
expect_image_matches_plan "$img" -t busybox -k "$work/seal.ks" --version 1.0.0

# The stamp outside the guest: GPT name and read-only attribute, ext4
# label and read-only feature, os-release and image.json.
sfdisk --json "$img" >"$work/table.json"
jq -e '.partitiontable.partitions[] | select(.type == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")
       | .name == "busybox_1.0.0" and .attrs == "GUID:60"' "$work/table.json" >/dev/null ||
        { cat "$work/table.json"; fail "root partition: name or read-only attribute"; }
root_start=$(( $(jq '.partitiontable.partitions[] | select(.type == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709") | .start' "$work/table.json") * 512 ))
dev="$img?offset=$root_start"
dumpe2fs -h "$dev" 2>/dev/null >"$work/sb"
grep -q '^Filesystem volume name: *busybox_1.0.0$' "$work/sb" || { cat "$work/sb"; fail "root label"; }
grep -q '^Filesystem features:.* read-only' "$work/sb" || { cat "$work/sb"; fail "no ext4 read-only feature"; }
debugfs -R 'cat /etc/os-release' "$dev" 2>/dev/null | grep -qx 'IMAGE_VERSION=1.0.0' || fail "os-release IMAGE_VERSION"
debugfs -R 'cat /usr/lib/ingot/image.json' "$dev" 2>/dev/null >"$work/image.json"
jq -e '.name == "busybox" and .version == "1.0.0" and (.inputs.template.sha256 | length) == 64 and
       (.inputs.rootfs.sha256 | length) == 64' "$work/image.json" >/dev/null ||
        { cat "$work/image.json"; fail "image.json"; }
esp_start=$(( $(jq '.partitiontable.partitions[] | select(.type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B") | .start' "$work/table.json") * 512 ))
MTOOLS_SKIP_CHECK=1 mtype -i "$img@@$esp_start" ::/loader/entries/busybox-1.0.0.conf >"$work/entry"
grep -Eq '^options .*root=PARTUUID=[0-9a-f-]+ ro( |$)' "$work/entry" || { cat "$work/entry"; fail "the root is not mounted ro"; }

# Inside the guest.
expect_exit 0 "$INGOT" boot --firmware bios --timeout 600 --serial-log "$work/serial.log" "$img"
expect_out 'ingot-ready name=busybox version=1\.0\.0 verity=off'
fact() { grep -Eq "^fact: $1" "$work/serial.log" || { grep '^fact:' "$work/serial.log"; fail "inside the guest: expected '$1'"; }; }
fact 'root-write .*Read-only file system'
fact 'remount refused'
fact 'root-mount ro'
fact 'var-write ok'
fact 'tmp-write ok'
fact 'httpd running'
fact 'os-release busybox 1\.0\.0'

# Bad versions are refused before anything is built.
for v in 1.0.0/x UPPER 'a b' ''; do
        expect_exit 2 "$INGOT" build -t busybox -k minimal --version "$v" -o "$work/bad"
        expect_err 'version'
done
[[ ! -e $work/bad ]] || fail "a bad version left an output directory"

# Reproducible: the same inputs in another directory, later, with a cold
# cache (the bootstrap runs again), give the same bytes.
sleep 1
mkdir -p "$work/elsewhere/deep"
(cd "$work/elsewhere" && expect_exit 0 "$INGOT" build -t busybox -k "$work/seal.ks" --version 1.0.0 \
        --cache-dir "$work/cold-cache" -o "$work/elsewhere/deep")
expect_err 'rootfs'
grep -q 'bootstrap from cache' "$work/err" && fail "the second build was meant to have a cold cache"
a=$(sha256sum <"$img") b=$(sha256sum <"$work/elsewhere/deep/busybox-1.0.0.raw")
[[ "$a" == "$b" ]] || fail "two builds of the same inputs differ: $a vs $b"
cmp "$out/busybox-1.0.0.manifest.json" "$work/elsewhere/deep/busybox-1.0.0.manifest.json" || fail "the manifests differ"
echo "reproducible: $a"

# --check-reproducible agrees, and leaves the image in place.
expect_exit 0 "$INGOT" build -t busybox -k "$work/seal.ks" --version 1.0.0 --check-reproducible -o "$work/check"
expect_err 'identical'
[[ $(sha256sum <"$work/check/busybox-1.0.0.raw") == "$a" ]] || fail "--check-reproducible's image differs"
ls -A "$work/check" | grep -q '^\.ingot-repro' && fail "--check-reproducible left its directories"

# ... and names the partition when a %post makes the build depend on the clock
# (/proc/uptime: busybox date has no %N, and two builds can fall in one second).
printf '%%include %s\n%%post\ncat /proc/uptime >/etc/build-time\n%%end\n' "$data/kickstart/minimal.ks" >"$work/clock.ks"
expect_exit 1 "$INGOT" build -t busybox -k "$work/clock.ks" --version 1.0.0 --check-reproducible -o "$work/clock"
expect_err "not reproducible: .*partition [0-9]+ 'busybox_1\.0\.0'"
echo "seal: ok"
