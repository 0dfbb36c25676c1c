#!/usr/bin/env bash
# ingot boot against real firmware: a GPT disk whose ESP holds the layout
# boot_stage_esp() writes (tests/data/boot-esp, the same files the unit test
# compares with), syslinux installed at the ESP's offset plus gptmbr.bin for
# BIOS, systemd-boot for UEFI, the Debian kernel and a busybox initrd that
# prints the ready line. Built with host tools only: no root, no mount, no
# loop device. Under TCG each boot takes tens of seconds.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"

esp_data=$here/../data/boot-esp
gptmbr=/usr/lib/syslinux/mbr/gptmbr.bin
sdboot=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
busybox=/bin/busybox

for tool in qemu-system-x86_64 sfdisk mkfs.vfat mcopy mmd syslinux cpio truncate; do
        command -v "$tool" >/dev/null || { echo "skip: '$tool' is not installed"; exit 77; }
done
for f in "$gptmbr" "$sdboot" "$busybox" /usr/share/OVMF/OVMF_CODE_4M.fd; do
        [[ -r $f ]] || { echo "skip: '$f' is missing"; exit 77; }
done
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || ldd "$busybox" 2>&1 | grep -q 'not a dynamic' ||
        { echo "skip: '$busybox' is not static (package busybox-static)"; exit 77; }

# The Debian kernel, cached across runs.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/ingot-test
mkdir -p "$cache"
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }' || true)
kernel=
if [[ -n $pkg && -r $cache/vmlinuz-${pkg#linux-image-} ]]; then
        kernel=$cache/vmlinuz-${pkg#linux-image-}
elif [[ -n $pkg ]]; then
        (cd "$work" && apt-get download "$pkg" >/dev/null 2>&1) || { echo "skip: cannot download '$pkg'"; exit 77; }
        dpkg-deb -x "$work"/"$pkg"_*.deb "$work/kpkg"
        cp "$work"/kpkg/boot/vmlinuz-* "$cache/vmlinuz-${pkg#linux-image-}.tmp"
        mv "$cache/vmlinuz-${pkg#linux-image-}.tmp" "$cache/vmlinuz-${pkg#linux-image-}"
        rm -rf "$work/kpkg" "$work"/*.deb
        kernel=$cache/vmlinuz-${pkg#linux-image-}
else
        kernel=$(ls "$cache"/vmlinuz-* 2>/dev/null | grep -v '\.tmp$' | tail -n 1 || true)
fi
[[ -n $kernel && -r $kernel ]] || { echo "skip: no Debian kernel (apt-get download linux-image-amd64)"; exit 77; }

# make_initrd NAME BODY: an initrd whose /init is a busybox script ending in BODY
make_initrd() {
        local d=$work/initrd-$1
        mkdir -p "$d/bin" "$d/proc" "$d/sys" "$d/dev"
        cp "$busybox" "$d/bin/busybox"
        cat >"$d/init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
$2
EOF
        chmod 755 "$d/init"
        (cd "$d" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$work/$1.cpio"
}

# make_image NAME INITRD: a 64 MiB GPT disk, one 48 MiB ESP at 1 MiB
make_image() {
        local img=$work/$1.raw esp=$work/esp-$1
        mkdir -p "$esp/EFI/BOOT" "$esp/EFI/systemd" "$esp/loader/entries" "$esp/syslinux" "$esp/test/0"
        cp "$sdboot" "$esp/EFI/BOOT/BOOTX64.EFI"
        cp "$sdboot" "$esp/EFI/systemd/systemd-bootx64.efi"
        cp "$esp_data/loader.conf" "$esp/loader/loader.conf"
        cp "$esp_data/test-0.conf" "$esp/loader/entries/test-0.conf"
        cp "$esp_data/syslinux.cfg" "$esp/syslinux/syslinux.cfg"
        cp "$kernel" "$esp/test/0/vmlinuz"
        cp "$2" "$esp/test/0/initrd.img"

        truncate -s 64M "$img"
        sfdisk -q "$img" <<<'label: gpt
start=2048, size=98304, type=uefi, name="esp", attrs="LegacyBIOSBootable"' || fail "sfdisk on '$img'"
        mkfs.vfat --invariant -n ESP --offset 2048 "$img" 49152 >/dev/null 2>&1 || fail "mkfs.vfat on '$img'"
        MTOOLS_SKIP_CHECK=1 mcopy -s -m -i "$img@@1M" "$esp"/* ::/ || fail "mcopy into '$img'"
        SOURCE_DATE_EPOCH=1700000000 syslinux --install --offset 1048576 --directory /syslinux "$img" ||
                fail "syslinux --install on '$img'"
        dd if="$gptmbr" of="$img" bs=440 count=1 conv=notrunc status=none
}

# no_qemu_for IMAGE: nothing of ours still runs on that image
no_qemu_for() {
        sleep 0.5
        if pgrep -f "qemu-system.*$1" >/dev/null; then
                pgrep -af "qemu-system.*$1" >&2
                pkill -KILL -f "qemu-system.*$1" || true
                fail "a qemu for '$1' was left running"
        fi
}

make_initrd poweroff 'echo "ingot-ready name=test version=0" >/dev/console
/bin/busybox poweroff -f'
# stays up: ingot has to take it down (QMP powerdown, then quit)
make_initrd stay 'echo "ingot-ready name=test version=0" >/dev/console
while :; do /bin/busybox sleep 3600; done'
make_initrd silent 'echo "this image never gets ready" >/dev/console
while :; do /bin/busybox sleep 3600; done'
make_initrd crash 'echo "init gives up" >/dev/console
exit 1'
make_image ready "$work/poweroff.cpio"
make_image stay "$work/stay.cpio"
make_image silent "$work/silent.cpio"
make_image crash "$work/crash.cpio"

# A missing image is bad input.
expect_exit 2 "$INGOT" boot "$work/nonexistent.raw"
expect_err "cannot open image '.*nonexistent.raw': No such file or directory"
expect_exit 2 "$INGOT" boot --firmware floppy "$work/ready.raw"
expect_err "invalid firmware 'floppy'"

# BIOS: SeaBIOS → gptmbr.bin → syslinux → kernel → ready line.
start=$SECONDS
expect_exit 0 "$INGOT" boot --firmware bios --timeout 240 "$work/ready.raw"
expect_out '^ingot-ready name=test version=0$'
expect_out '^ready after [0-9.]+ s \(firmware bios, accelerator (tcg|kvm)\)$'
echo "bios: $(grep '^ready after' "$work/out") [wall $((SECONDS - start)) s]"
no_qemu_for "$work/ready.raw"

# UEFI: OVMF → systemd-boot → kernel (EFI stub) → ready line; the guest stays
# up, so ingot shuts it down itself.
stay_sum=$(sha256sum <"$work/stay.raw")
start=$SECONDS
expect_exit 0 "$INGOT" --json boot --firmware uefi --timeout 240 "$work/stay.raw"
python3 - "$work/out" <<'EOF' || fail "unexpected JSON: $(cat "$work/out")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["firmware"] == "uefi", j
assert j["accelerator"] in ("tcg", "kvm"), j
assert j["ready"] == "ingot-ready name=test version=0", j
assert j["boot_seconds"] > 0, j
assert j["image"].endswith("stay.raw"), j
EOF
echo "uefi: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["boot_seconds"], "s")' "$work/out") [wall $((SECONDS - start)) s, shutdown included]"
no_qemu_for "$work/stay.raw"
[[ $(sha256sum <"$work/stay.raw") == "$stay_sum" ]] || fail "booting wrote to the image"

# No ready line within the timeout: exit 1, the last serial lines, no VM left.
expect_exit 1 "$INGOT" boot --firmware bios --timeout 20 "$work/silent.raw"
expect_err "no ready line .* within 20 s"
expect_err "last serial lines"
grep -q '^    ' "$work/err" || fail "no serial lines in: $(cat "$work/err")"
no_qemu_for "$work/silent.raw"

# The guest dies before the ready line: exit 1 with its last words.
expect_exit 1 "$INGOT" boot --firmware bios --timeout 240 "$work/crash.raw"
expect_err "the VM (shut down or rebooted|exited with status [0-9]+) before the ready line"
expect_err "Kernel Offset|Kernel panic|end trace"
no_qemu_for "$work/crash.raw"

# SIGTERM to ingot takes the VM along.
mkdir -p "$work/tmp"
TMPDIR=$work/tmp "$INGOT" boot --firmware bios --timeout 200 "$work/silent.raw" >/dev/null 2>"$work/err" &
pid=$!
for _ in $(seq 100); do pgrep -f "qemu-system.*silent.raw" >/dev/null && break; sleep 0.1; done
pgrep -f "qemu-system.*silent.raw" >/dev/null || fail "qemu did not start"
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[[ $rc -eq 143 ]] || { cat "$work/err" >&2; fail "ingot exited $rc on SIGTERM, expected 143"; }
no_qemu_for "$work/silent.raw"
[[ -z $(ls -A "$work/tmp") ]] || fail "left behind in TMPDIR: $(ls -A "$work/tmp")"

echo "ok"
