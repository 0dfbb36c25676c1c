#!/usr/bin/env bash
# Benchmarks for the push issue, side by side in one run, same image, same
# s3rver (behind the SigV4-verifying proxy, which counts the body bytes
# every client sends), same machine:
#   ingot push of the Debian 12 web-server image vs awscli's multipart
#     upload (aws s3 cp) of the raw file: wall time and bytes sent
#   incremental push of a one-file change (a new page) as 1.0.1
#   ingot pull vs aws s3 cp download
#   ingot push to a file:// store vs cp --sparse=always (the floor)
# Usage: bench/push.sh [INGOT]   (default: build/ci/inst/bin/ingot)
# Prints one table; copy it into bench/README.md with the date.
SECS_FORMAT=%.2f
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
work=$w
source "$top/tests/integration/s3lib.sh"

mib() { echo "scale=1; $1 / 1048576" | bc; }

# the images (cached bootstrap; not measured)
printf '%%include %s/kickstart/web-server.ks\n%%post\necho updated > /var/www/html/changed.html\n%%end\n' \
        "$top" >"$w/changed.ks"
"$ingot" build -q -t debian-12 -k web-server --version 1.0.0 -o "$w/img" >/dev/null 2>&1
"$ingot" build -q -t debian-12 -k "$w/changed.ks" --version 1.0.1 -o "$w/img" >/dev/null 2>&1
img=$w/img/debian-12-1.0.0.raw img2=$w/img/debian-12-1.0.1.raw
size=$(stat -c %s "$img") alloc=$(du -B1 "$img" | cut -f1)
row "image: apparent size / allocated" "$(mib "$size") MiB / $(mib "$alloc") MiB"

s3_start >/dev/null
proxy_reset
t=$(secs "$ingot" push "$img" --store "$S3_URL")
sent=$(proxy_stat bytes_in)
row "ingot push 1.0.0 → s3rver (via the proxy)" "$t s" "$(mib "$sent") MiB sent"
t_ingot=$t sent_ingot=$sent
proxy_reset
t=$(secs aws_proxy s3 cp --quiet "$img" "s3://$S3_BUCKET/awscli/debian-12-1.0.0.raw")
sent=$(proxy_stat bytes_in)
row "aws s3 cp (multipart) of the raw file" "$t s" "$(mib "$sent") MiB sent; ingot $(echo "scale=1; $t / $t_ingot" | bc)× faster (goal ≥ 2×)"
proxy_reset
t=$(secs "$ingot" push "$img2" --store "$S3_URL")
sent=$(proxy_stat bytes_in)
row "ingot push 1.0.1 (one page added)" "$t s" "$(mib "$sent") MiB sent = $(echo "scale=1; 100 * $sent / $sent_ingot" | bc)% of the first push (goal ≤ 5%)"
proxy_reset
t=$(secs "$ingot" pull debian-12@1.0.0 --store "$S3_URL" -o "$w/pulled.raw")
row "ingot pull 1.0.0 (every block verified)" "$t s" "$(mib "$(proxy_stat bytes_out)") MiB received"
cmp -s "$img" "$w/pulled.raw" || { echo "bench: the pulled image differs" >&2; exit 1; }
rm -f "$w/pulled.raw"
proxy_reset
t=$(secs aws_proxy s3 cp --quiet "s3://$S3_BUCKET/awscli/debian-12-1.0.0.raw" "$w/aws.raw")
row "aws s3 cp download of the raw file" "$t s" "$(mib "$(proxy_stat bytes_out)") MiB received"
rm -f "$w/aws.raw"
s3_stop

t=$(secs "$ingot" push "$img" --store "file://$w/store")
row "ingot push 1.0.0 → file:// store" "$t s"
t=$(secs cp --sparse=always "$img" "$w/copy.raw")
row "cp --sparse=always of the image (the floor)" "$t s"

printf '%s\n' "bench/push.sh — $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
printf '%s\n' "${rows[@]}"
