#!/usr/bin/env bash
# Benchmarks for the build issue, side by side in one run on this machine:
#   busybox image: cold and cached build
#   Debian 12 (templates/debian-12.conf + kickstart/web-server.ks):
#     full build from nothing vs plain mmdebstrap of the same package set,
#     cached rebuild with a new version stamp,
#     image assembly after the rootfs stage vs the raw floor (tar + mke2fs -d)
#     and a libguestfs pipeline (guestfish part-init/mkfs/tar-in) under TCG
#   ingot boot to the ready line, both images, both firmwares
# Usage: bench/build.sh [INGOT]   (default: build/ci/inst/bin/ingot)
# Prints one table; copy it into bench/README.md with the date.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- busybox
t=$(secs "$ingot" build -t busybox -k minimal --version 1.0.0 -o "$w/out" --cache-dir "$w/cache-bb")
row "busybox build, cold cache" "$t s" "goal ≤ 5 s (cached)"
t=$(secs "$ingot" build -t busybox -k minimal --version 1.0.1 -o "$w/out" --cache-dir "$w/cache-bb")
row "busybox build, cached bootstrap, new version" "$t s" "goal ≤ 5 s"

# --- Debian: ingot from nothing, then plain mmdebstrap of the same packages
pkgs=$("$ingot" build --dry-run -t debian-12 -k web-server --version 1 --json | jq -r '.rootfs.packages | join(",")')
t=$(secs "$ingot" build -t debian-12 -k web-server --version 1.0.0 -o "$w/out" --cache-dir "$w/cache-deb")
full=$t
row "debian-12 + web-server.ks, full build from nothing" "$t s" "rootfs $(stage rootfs) s, disk $(stage disk) s, seal $(stage seal) s"
t=$(secs mmdebstrap --quiet --variant=minbase --include="$pkgs,initramfs-tools" bookworm "$w/mmdebstrap.tar")
row "  plain mmdebstrap, same package set" "$t s" "goal: ingot ≤ this + 20 s ($(printf '%.1f' "$(echo "$full - $t" | bc)") s over)"
t=$(secs "$ingot" build -t debian-12 -k web-server --version 1.0.1 -o "$w/out" --cache-dir "$w/cache-deb")
row "debian-12 cached rebuild (new version stamp)" "$t s" "goal ≤ 20 s"
asm=$(echo "$(stage disk) + $(stage seal)" | bc)
row "  image assembly after the rootfs stage (disk + seal)" "$asm s" "goal ≤ 15 s; rootfs stage (kickstart) $(stage rootfs) s"

# --- the alternatives for assembly, from the same tree (the cached bootstrap)
tar=$(ls "$w"/cache-deb/rootfs-*/base.tar | head -n 1)
floor() {
        mkdir "$w/floor" && tar -C "$w/floor" --numeric-owner -xpf "$tar" &&
        truncate -s 2G "$w/floor.img" && mke2fs -q -F -t ext4 -E offset=1048576 -d "$w/floor" "$w/floor.img" 2000M
}
t=$(secs floor)
row "  raw floor: tar -x + mke2fs -d (root, no bootloader)" "$t s" ""
rm -rf "$w/floor" "$w/floor.img"
guestfs() {
        LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg guestfish -N "$w/gfs.img=disk:2G" -- \
                part-init /dev/sda gpt : part-add /dev/sda p 2048 -2048 : mkfs ext4 /dev/sda1 : \
                mount /dev/sda1 / : tar-in "$tar" / : umount-all
}
t=$(secs guestfs)
row "  libguestfs: guestfish part-init/mkfs/tar-in (TCG)" "$t s" ""
rm -f "$w/gfs.img"

# --- boot to the ready line
for img in busybox-1.0.0 debian-12-1.0.0; do
        for fw in bios uefi; do
                "$ingot" --json boot --firmware "$fw" --timeout 900 "$w/out/$img.raw" >"$w/boot.json" 2>/dev/null ||
                        { row "ingot boot $img ($fw)" "failed" ""; continue; }
                row "ingot boot $img ($fw), QEMU start to ready line" "$(jq -r '.boot_seconds' "$w/boot.json") s" "$(jq -r .accelerator "$w/boot.json")"
        done
done

echo "ingot build benchmarks, $(date -u +%F), $(nproc) cores, $(uname -m), no KVM"
printf '%s\n' "${rows[@]}"
