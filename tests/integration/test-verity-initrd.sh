#!/usr/bin/env bash
# The initrd side of --verity (data/verity/): the initramfs-tools hook,
# the local-top script that opens /dev/mapper/ingot-root from the kernel
# command line, and the verity-status script the ready line uses.
#  1. the scripts parse (sh -n, and shellcheck when installed);
#  2. the local-top script runs against a fake command line, device
#     directory and stub modprobe/veritysetup: nothing without parameters,
#     the right veritysetup call with them, a panic with a clear message
#     for a missing partition, a bad root hash or a failing veritysetup;
#  3. verity-status says on/off for fake /proc and /sys trees;
#  4. mkinitramfs with the hook in a temporary CONFDIR makes an initrd
#     holding veritysetup, dm-verity.ko and the script (no root needed).
# Needs only the source tree; INGOT is not used.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../../data/verity" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
        echo "FAIL: $*" >&2
        exit 1
}

# 1. Syntax.
for f in initramfs-hook initramfs-local-top ingot-verity-status; do
        sh -n "$src/$f" || fail "$f does not parse"
        [[ -x $src/$f ]] || fail "$f is not executable"
done
if command -v shellcheck >/dev/null; then
        shellcheck -s sh -e SC1091 "$src"/initramfs-hook "$src"/initramfs-local-top "$src"/ingot-verity-status
fi
[[ $(sh "$src/initramfs-hook" prereqs) == udev ]] || fail "hook prereqs"
[[ -z $(sh "$src/initramfs-local-top" prereqs) ]] || fail "local-top prereqs"

# 2. local-top with stubs.
mkdir -p "$work/bin" "$work/dev"
cat >"$work/bin/veritysetup" <<'EOF'
#!/bin/sh
echo "$*" >>"$STUB_LOG"
[ -z "$STUB_FAIL" ] || { echo "$STUB_FAIL" >&2; exit 1; }
EOF
cat >"$work/bin/modprobe" <<'EOF'
#!/bin/sh
echo "modprobe $*" >>"$STUB_LOG"
EOF
chmod +x "$work/bin/veritysetup" "$work/bin/modprobe"

hash=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
data_uuid=4f68bce3-e8cd-4db1-96e7-fbcaf984b709
hash_uuid=2c7357ed-ebd2-46d9-aec1-23d437ec2bf5
touch "$work/dev/$data_uuid" "$work/dev/$hash_uuid"

# run_local_top CMDLINE: exit status in $rc, stderr in $work/err, calls in $work/log
run_local_top() {
        : >"$work/log"
        rc=0
        env PATH="$work/bin:$PATH" STUB_LOG="$work/log" STUB_FAIL="${STUB_FAIL:-}" \
                INGOT_VERITY_CMDLINE="$1" INGOT_VERITY_DEVDIR="$work/dev" INGOT_VERITY_TIMEOUT=1 \
                sh "$src/initramfs-local-top" 2>"$work/err" || rc=$?
}

expect_panic() {
        [[ $rc -ne 0 ]] || fail "no panic for: $1"
        grep -q "^PANIC: ingot: cannot set up dm-verity for the root: .*$1" "$work/err" ||
                { cat "$work/err" >&2; fail "panic message does not match '$1'"; }
        ! grep -q '^open' "$work/log" || fail "veritysetup ran despite: $1"
}

run_local_top "BOOT_IMAGE=/vmlinuz root=/dev/sda2 ro quiet"
[[ $rc -eq 0 && ! -s $work/log && ! -s $work/err ]] || fail "local-top acted without ingot.verity parameters"

run_local_top "root=/dev/mapper/ingot-root ro ingot.verity.roothash=$hash ingot.verity.data=$data_uuid ingot.verity.hash=$hash_uuid console=ttyS0"
[[ $rc -eq 0 ]] || { cat "$work/err" >&2; fail "local-top failed with every parameter right"; }
grep -qx "modprobe -q dm-verity" "$work/log" || fail "dm-verity not loaded"
grep -qx "open $work/dev/$data_uuid ingot-root $work/dev/$hash_uuid $hash" "$work/log" ||
        { cat "$work/log" >&2; fail "veritysetup not called as expected"; }

run_local_top "ingot.verity.roothash=$hash ingot.verity.data=$data_uuid ingot.verity.hash=00000000-0000-4000-8000-000000000000"
expect_panic "hash partition 00000000-0000-4000-8000-000000000000 not found in .* after 1s"

run_local_top "ingot.verity.roothash=xyz$hash ingot.verity.data=$data_uuid ingot.verity.hash=$hash_uuid"
expect_panic "is not hex"
run_local_top "ingot.verity.roothash=${hash:2} ingot.verity.data=$data_uuid ingot.verity.hash=$hash_uuid"
expect_panic "has 62 digits, not 64"
run_local_top "ingot.verity.roothash=$hash ingot.verity.data=$data_uuid"
expect_panic "must come with ingot.verity.roothash"

STUB_FAIL="Verity device detected corruption after activation." \
        run_local_top "ingot.verity.roothash=$hash ingot.verity.data=$data_uuid ingot.verity.hash=$hash_uuid"
[[ $rc -ne 0 ]] || fail "no panic when veritysetup fails"
grep -q "^PANIC: ingot: cannot set up dm-verity for the root: veritysetup open failed: Verity device detected corruption" \
        "$work/err" || { cat "$work/err" >&2; fail "veritysetup's error not in the panic message"; }

# 3. verity-status on fake trees.
fake_root() { # DIR ROOT-MAJMIN DM-NAME DM-UUID
        mkdir -p "$1/proc/self" "$1/sys/dev/block/253:0/dm"
        printf '%s\n' "22 1 0:21 / /proc rw - proc proc rw" \
                "36 1 $2 / / ro,relatime shared:1 - ext4 /dev/root ro" \
                "40 36 0:30 / /tmp rw - tmpfs tmpfs rw" >"$1/proc/self/mountinfo"
        echo "$3" >"$1/sys/dev/block/253:0/dm/name"
        echo "$4" >"$1/sys/dev/block/253:0/dm/uuid"
}
status() { INGOT_VERITY_SYSROOT=$1 sh "$src/ingot-verity-status"; }
fake_root "$work/on" 253:0 ingot-root CRYPT-VERITY-1f2e3d4c5b6a79880123456789abcdef-ingot-root
[[ $(status "$work/on") == on ]] || fail "verity-status: not on for a verity root"
fake_root "$work/luks" 253:0 ingot-root CRYPT-LUKS2-1f2e3d4c5b6a79880123456789abcdef-ingot-root
[[ $(status "$work/luks") == off ]] || fail "verity-status: on for a LUKS root"
fake_root "$work/plain" 8:2 ingot-root CRYPT-VERITY-1f2e3d4c5b6a79880123456789abcdef-ingot-root
[[ $(status "$work/plain") == off ]] || fail "verity-status: on for a root on a partition"
fake_root "$work/other" 253:0 other CRYPT-VERITY-1f2e3d4c5b6a79880123456789abcdef-other
[[ $(status "$work/other") == off ]] || fail "verity-status: on for another verity device"

# 4. A real initrd.
command -v mkinitramfs >/dev/null && command -v lsinitramfs >/dev/null ||
        { echo "mkinitramfs not installed (initramfs-tools-core): initrd not built" >&2; exit 77; }
kver=
for d in /lib/modules/*; do
        [[ -f $d/modules.dep ]] && compgen -G "$d/kernel/drivers/md/dm-verity.ko*" >/dev/null && kver=${d##*/}
done
[[ -n $kver ]] || { echo "no kernel modules with dm-verity in /lib/modules: initrd not built" >&2; exit 77; }
command -v veritysetup >/dev/null ||
        { echo "veritysetup not installed (cryptsetup-bin): initrd not built" >&2; exit 77; }

conf=$work/conf
mkdir -p "$conf/hooks" "$conf/scripts/local-top" "$conf/conf.d"
install -m 0755 "$src/initramfs-hook" "$conf/hooks/ingot-verity"
install -m 0755 "$src/initramfs-local-top" "$conf/scripts/local-top/ingot-verity"
printf 'MODULES=list\nBUSYBOX=n\nCOMPRESS=gzip\n' >"$conf/initramfs.conf"
: >"$conf/modules"
mkinitramfs -d "$conf" -o "$work/initrd.img" "$kver" 2>"$work/mkinitramfs.err" ||
        { cat "$work/mkinitramfs.err" >&2; fail "mkinitramfs failed"; }
lsinitramfs "$work/initrd.img" >"$work/list"
for want in 'sbin/veritysetup$' '/dm-verity\.ko' '/dm-bufio\.ko' '/dm-mod\.ko' 'libcryptsetup\.so' \
        'rules\.d/55-dm\.rules$' 'rules\.d/95-dm-notify\.rules$' '^scripts/local-top/ingot-verity$'; do
        grep -Eq -- "$want" "$work/list" || { cat "$work/list" >&2; fail "initrd lacks $want"; }
done
mkdir "$work/x"
(cd "$work/x" && unmkinitramfs "$work/initrd.img" . >/dev/null 2>&1) || fail "unmkinitramfs failed"
cmp "$src/initramfs-local-top" "$work/x/scripts/local-top/ingot-verity" || fail "the initrd's script differs"
grep -q '/scripts/local-top/ingot-verity' "$work/x/scripts/local-top/ORDER" || fail "ingot-verity not in local-top ORDER"
echo "initrd for $kver: veritysetup, dm-verity and the script are in"
