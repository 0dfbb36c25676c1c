# ingot inspect on an image made here with sfdisk, mkfs.vfat and mke2fs -d
# (fixed GUIDs, so the report is compared byte for byte), the refusals,
# the libguestfs deadline (a hypervisor that never starts), and one real
# OS inspection under TCG that must finish and find the os-release.
# INGOT_UPDATE_EXPECTED=1 rewrites the expected file (review the diff!).
source "$(dirname "$0")/lib.sh"

for tool in sfdisk mkfs.vfat mke2fs jq; do
        command -v "$tool" >/dev/null || { echo "$tool is missing (scripts/setup installs it)"; exit 77; }
done

cd "$work"
mkdir -p tree/etc tree/bin tree/usr/bin
cat >tree/etc/os-release <<'EOF'
NAME="Ingot Test"
ID=ingottest
VERSION_ID=1.2
PRETTY_NAME="Ingot Test 1.2"
IMAGE_ID=golden
IMAGE_VERSION=1.2.3
EOF
echo inspected >tree/etc/hostname
: >tree/etc/fstab

# biosboot, ESP (FAT16), root (ext4 filled from tree/), 80 MiB in all
truncate -s 80M disk.raw
sfdisk -q disk.raw <<'EOF' >/dev/null
label: gpt
label-id: 01234567-89AB-CDEF-0123-456789ABCDEF
start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, uuid=AAAAAAAA-0000-4000-8000-000000000001, name=biosboot, attrs="LegacyBIOSBootable"
start=4096, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=AAAAAAAA-0000-4000-8000-000000000002, name=esp
start=69632, size=92160, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=AAAAAAAA-0000-4000-8000-000000000003, name=root, attrs="GUID:59,GUID:60"
EOF
# --invariant first: after -i it resets the volume id to 1234-ABCD (dosfstools 4.2)
mkfs.vfat --offset=4096 --invariant -i 5037E596 -n ESP disk.raw 32768 >/dev/null 2>&1
truncate -s 45M root.ext4
mke2fs -q -F -t ext4 -d tree -U 11111111-2222-4333-8444-555555555555 -L root root.ext4
dd if=root.ext4 of=disk.raw bs=512 seek=69632 conv=notrunc,sparse status=none

# the fast path: table and filesystems, no VM
exp=$expected/inspect-gpt.json
expect_exit 0 "$INGOT" --json inspect --no-os disk.raw
[[ ! -s $work/err ]] || { cat "$work/err" >&2; fail "inspect --no-os printed on stderr"; }
cp "$work/out" first.json
if [[ ${INGOT_UPDATE_EXPECTED:-} == 1 ]]; then
        cp first.json "$exp"
fi
diff -u "$exp" first.json || fail "the report differs from $(basename "$exp")"
expect_exit 0 "$INGOT" inspect --no-os --json disk.raw
cmp -s first.json "$work/out" || fail "two runs printed different reports"

# the text form says the same
expect_exit 0 "$INGOT" inspect --no-os disk.raw
for want in 'gpt, disk GUID 01234567-89ab-cdef-0123-456789abcdef' 'type: +esp \(c12a7328-' \
        'aaaaaaaa-0000-4000-8000-000000000003' 'growfs, read-only = 0x1800000000000000' \
        'legacy-bios-bootable' 'vfat FAT16, label "ESP", volume id 5037-E596' \
        'ext4 1.0, label "root", uuid 11111111-2222-4333-8444-555555555555' 'not inspected'; do
        expect_out "$want"
done

# refusals: exit 2 for a path that names no image, 1 for a file that is none
expect_exit 2 "$INGOT" inspect missing.raw
expect_err "^ingot: error: cannot open image 'missing.raw': No such file or directory$"
expect_one_error_line
expect_exit 2 "$INGOT" inspect --no-os "$work"
expect_err "cannot open image '.*': Is a directory"
truncate -s 4M zero.raw
expect_exit 1 "$INGOT" inspect zero.raw
expect_err "^ingot: error: 'zero.raw' has no partition table: not a disk image$"
expect_one_error_line
expect_exit 1 "$INGOT" inspect root.ext4
expect_err "'root.ext4' has no partition table: it holds a bare ext4 filesystem, not a disk image"
expect_exit 2 "$INGOT" inspect
expect_err "missing argument"
expect_exit 2 "$INGOT" inspect disk.raw other.raw
expect_err "too many arguments"
expect_exit 2 "$INGOT" inspect --os-timeout 0 disk.raw
expect_err "invalid --os-timeout '0'"
expect_exit 2 "$INGOT" inspect --no-os --require-os disk.raw
expect_err "exclude each other"
expect_exit 2 "$INGOT" inspect --bogus disk.raw
expect_err "unknown option '--bogus'"

# The deadline: a "hypervisor" that never starts must not hang inspect; the
# OS is then unknown (exit 0) or an error with --require-os (exit 1), and
# nothing of the run is left behind.
printf '#!/bin/sh\nexec sleep 9973\n' >hang.sh
chmod +x hang.sh
sum_before=$(sha256sum <disk.raw)
start=$SECONDS
expect_exit 0 env LIBGUESTFS_HV="$work/hang.sh" timeout 120 "$INGOT" --json inspect --os-timeout 5 disk.raw
((SECONDS - start < 60)) || fail "inspect took $((SECONDS - start)) s with --os-timeout 5"
jq -e '.os.status == "failed" and (.os.error | test("did not finish within 5 s")) and
       (.disk.partitions | length) == 3' "$work/out" >/dev/null || { cat "$work/out" >&2; fail "the timeout was not reported"; }
expect_err "warning: OS of 'disk.raw' unknown: libguestfs did not finish within 5 s"
expect_exit 1 env LIBGUESTFS_HV="$work/hang.sh" timeout 120 "$INGOT" inspect --require-os --os-timeout 3 disk.raw
expect_err "^ingot: error: cannot inspect the OS in 'disk.raw': libguestfs did not finish within 3 s"
expect_out "^os: +unknown: libguestfs did not finish"
sleep 1
! pgrep -f 'sleep 9973' >/dev/null || fail "the hung hypervisor outlived inspect"
[[ $(sha256sum <disk.raw) == "$sum_before" ]] || fail "inspect changed the image"

# The real thing: the libguestfs appliance under TCG (KVM hangs on our
# machines), 20-60 s; it must finish and find the OS and its version stamp.
if ! compgen -G '/boot/vmlinuz-*' >/dev/null; then
        echo "no kernel in /boot for the libguestfs appliance (apt-get install linux-image-amd64)"
        exit 77
fi
start=$SECONDS
expect_exit 0 timeout 900 "$INGOT" -v --json inspect --os-timeout 600 disk.raw
echo "OS inspection took $((SECONDS - start)) s: $(grep 'appliance up' "$work/err" || true)"
jq -e '.os.status == "found" and .os.root == "/dev/sda3" and .os.partition == 3 and
       .os.type == "linux" and .os.product_name == "Ingot Test 1.2" and .os.version == "1.2" and
       .os.hostname == "inspected" and
       .os.os_release == {"id": "ingottest", "version_id": "1.2", "image_id": "golden", "image_version": "1.2.3"}' \
        "$work/out" >/dev/null || { cat "$work/out" "$work/err" >&2; fail "the OS inspection missed a fact"; }
# the rest of the report is the fast path's
jq 'del(.os)' "$work/out" | diff -u <(jq 'del(.os)' first.json) - || fail "the table differs with the OS inspection"
[[ $(sha256sum <disk.raw) == "$sum_before" ]] || fail "inspect changed the image"
