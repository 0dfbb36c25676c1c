#!/usr/bin/env bash
# Benchmarks for the seal issue, on the Debian 12 web-server image (cached
# bootstrap), side by side:
#   sealing overhead: sysprep (in the rootfs stage) + the seal stage
#     (digests of every partition and the image, manifest)
#   ingot verify vs sha256sum over the same image, sparse and fully
#     allocated (cp --sparse=never)
#   image assembly (the disk stage) with and without --verity
# Usage: bench/seal.sh [INGOT]   (default: build/ci/inst/bin/ingot)
# Prints one table; copy it into bench/README.md with the date.
SECS_FORMAT=%.2f
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# warm the bootstrap cache (not measured)
"$ingot" build -q -t debian-12 -k web-server --version 0.0.1 -o "$w/warm" >/dev/null 2>&1
rm -rf "$w/warm"

# --- sealing overhead, and assembly without verity (best of 2)
best_disk=999 best_seal=999
for i in 1 2; do
        secs "$ingot" -v build -t debian-12 -k web-server --version "1.0.$i" -o "$w/plain" >/dev/null
        d=$(stage disk) s=$(stage seal)
        sp=$(grep -o 'sysprep took [0-9.]*' "$w/last.log" | awk '{print $3}')
        (( $(echo "$d < $best_disk" | bc) )) && best_disk=$d
        (( $(echo "$s < $best_seal" | bc) )) && best_seal=$s && best_sysprep=$sp
done
img=$w/plain/debian-12-1.0.2.raw
row "sysprep (rootfs stage, in the namespace)" "$best_sysprep s"
row "seal stage: digests of every partition + manifest" "$best_seal s"
row "sealing overhead (sysprep + seal)" "$(echo "$best_sysprep + $best_seal" | bc) s" "goal ≤ 3 s"

# --- verify vs sha256sum
alloc=$(du -B1 "$img" | cut -f1)
row "image: apparent size / allocated" "$(( $(stat -c %s "$img") >> 20 )) MiB / $(( alloc >> 20 )) MiB"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t_verify=$(secs "$ingot" verify "$img")
t_sum=$(secs sha256sum "$img")
row "ingot verify, sparse image" "$t_verify s" "$(echo "scale=1; 100 * $t_sum / $t_verify" | bc)% of sha256sum's throughput (goal ≥ 80%)"
row "sha256sum, sparse image" "$t_sum s"
cp --sparse=never "$img" "$w/dense.raw"
cp "$w/plain/debian-12-1.0.2.manifest.json" "$w/dense.manifest.json"
t_verify=$(secs "$ingot" verify --manifest "$w/dense.manifest.json" "$w/dense.raw")
t_sum=$(secs sha256sum "$w/dense.raw")
row "ingot verify, fully allocated copy" "$t_verify s" "$(echo "scale=1; 100 * $t_sum / $t_verify" | bc)% of sha256sum's throughput"
row "sha256sum, fully allocated copy" "$t_sum s"
rm -f "$w/dense.raw"

# --- --verity on assembly (best of 2; the initrd is made again in the rootfs stage, not counted)
best_vdisk=999
for i in 1 2; do
        secs "$ingot" build -t debian-12 -k web-server --version "2.0.$i" --verity -o "$w/verity" >/dev/null
        d=$(stage disk)
        (( $(echo "$d < $best_vdisk" | bc) )) && best_vdisk=$d && vline=$(grep -E '^ingot: verity ' "$w/last.log" | awk '{print $3}')
done
row "assembly (disk stage), no verity" "$best_disk s"
row "assembly (disk stage), --verity" "$best_vdisk s" "+$(echo "scale=1; 100 * ($best_vdisk - $best_disk) / $best_disk" | bc)% (goal ≤ 25%); hash tree $vline"
t=$(secs "$ingot" verify "$w/verity/debian-12-2.0.2.raw")
row "ingot verify of the --verity image (digests + libcryptsetup tree check)" "$t s"

printf '%s\n' "bench/seal.sh — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
printf '%s\n' "${rows[@]}"
