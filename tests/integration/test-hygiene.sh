# The hygiene gate both ways: a freshly built busybox image passes
# `ingot verify --hygiene`; a copy with an SSH host key and an initialised
# machine-id planted into its root filesystem fails, naming both. The
# planting is debugfs -w on the root partition in place: no root, no
# loop devices, no mounts.
source "$(dirname "$0")/lib.sh"

for tool in debugfs tune2fs dumpe2fs jq; do
        command -v "$tool" >/dev/null || { echo "$tool is missing (scripts/setup installs it)"; exit 77; }
done

out=$work/images
mkdir -p "$out"
expect_exit 0 "$INGOT" build -t busybox -k minimal --version 1.0.0 -o "$out"
img=$out/busybox-1.0.0.raw

# A built image is clean.
expect_exit 0 "$INGOT" verify --hygiene "$img"
expect_out "^$img: hygiene: clean$"

# The root partition's offset, as the image itself says.
expect_exit 0 "$INGOT" inspect --json --no-os "$img"
offset=$(jq -er '[.disk.partitions[] | select(.role == "root")][0].start' "$work/out") ||
        fail "no root partition in '$img'"

dirty=$work/dirty.raw
cp --sparse=always "$img" "$dirty"
dev="$dirty?offset=$offset"
# A sealed root carries the ext4 read-only feature, and debugfs -w refuses
# such a filesystem: lift it on the copy.
if dumpe2fs -h "$dev" 2>/dev/null | grep -q '^Filesystem features:.*read-only'; then
        tune2fs -O ^read-only "$dev" >/dev/null 2>&1 || fail "cannot clear the read-only feature of '$dev'"
fi
printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\nplanted\n-----END OPENSSH PRIVATE KEY-----\n' >"$work/key"
printf '0123456789abcdef0123456789abcdef\n' >"$work/machine-id"
# debugfs exits 0 when a command fails ("mkdir" does when /etc/ssh exists):
# what it did is checked below, by reading it back.
debugfs -w -f - "$dev" >"$work/debugfs.log" 2>&1 <<EOF
mkdir /etc/ssh
cd /etc/ssh
write $work/key ssh_host_ed25519_key
cd /etc
rm machine-id
write $work/machine-id machine-id
EOF
[[ $(debugfs -R 'cat /etc/machine-id' "$dev" 2>/dev/null) == 0123456789abcdef0123456789abcdef ]] ||
        { cat "$work/debugfs.log" >&2; fail "planting the machine-id failed"; }
debugfs -R 'ls -p /etc/ssh' "$dev" 2>/dev/null | grep -q '/ssh_host_ed25519_key/' ||
        { cat "$work/debugfs.log" >&2; fail "planting the SSH host key failed"; }

expect_exit 1 "$INGOT" verify --hygiene "$dirty"
expect_out "^$dirty: leftover: /etc/machine-id \(.*\)$"
expect_out "^$dirty: leftover: /etc/ssh/ssh_host_ed25519_key \(SSH host key\)$"
grep -q 'hygiene: clean' "$work/out" && fail "a dirty image is reported clean"
# sorted by path, nothing else found
[[ $(grep -c ': leftover: ' "$work/out") -eq 2 ]] || { cat "$work/out" >&2; fail "expected exactly two leftovers"; }

# The same as JSON.
expect_exit 1 "$INGOT" verify --hygiene --json "$dirty"
jq -e '.hygiene == "dirty" and ([.findings[].path] == ["/etc/machine-id", "/etc/ssh/ssh_host_ed25519_key"])' \
        "$work/out" >/dev/null || { cat "$work/out" >&2; fail "the JSON does not list both leftovers"; }

# Not an image with a root partition: a clear error, not a finding.
truncate -s 8M "$work/blank.raw"
rc=0
"$INGOT" verify --hygiene "$work/blank.raw" >"$work/out" 2>"$work/err" || rc=$?
[[ $rc -ne 0 ]] || fail "a blank file passes the hygiene gate"
expect_err 'partition table|no root partition'
grep -q 'leftover' "$work/out" && fail "a blank file has leftovers"
echo "hygiene: clean image passes, planted leftovers are named"
