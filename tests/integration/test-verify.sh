# The seal's manifest and signature: ingot keygen, ingot build --sign-key,
# ingot verify on a good image (exit 0) and on copies with one byte
# flipped in the root partition, the ESP and the partition table (exit 1,
# naming the right one), a manifest edited after signing, a wrong key, a
# missing manifest, a bad signing key; and two builds from the same inputs
# giving byte-identical manifests.
source "$(dirname "$0")/lib.sh"

MiB=1048576
out=$work/images
cache=$work/cache
img=$out/busybox-1.0.0.raw
man=$out/busybox-1.0.0.manifest.json

build() { "$INGOT" build -t busybox -k minimal --version 1.0.0 --cache-dir "$cache" "$@"; }

# flip FILE OFFSET: XORs one byte with 1 (twice restores it)
flip() {
        local b
        b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
        printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# Key pairs: mode 0600 private key, a fingerprint, never overwritten.
expect_exit 0 "$INGOT" keygen -o "$work/k1"
expect_out '^fingerprint: SHA256:[0-9a-f]{64}$'
fp1=$(grep -o 'SHA256:[0-9a-f]*' "$work/out")
[[ $(stat -c %a "$work/k1.key") == 600 ]] || fail "the private key is not mode 0600"
grep -q 'BEGIN PRIVATE KEY' "$work/k1.key" || fail "the private key is not PKCS#8 PEM"
grep -q 'BEGIN PUBLIC KEY' "$work/k1.pub" || fail "the public key is not SubjectPublicKeyInfo PEM"
grep -q 'PRIVATE' "$work/out" && fail "keygen printed private key material"
sum=$(sha256sum <"$work/k1.key")
expect_exit 1 "$INGOT" keygen -o "$work/k1"
expect_err "k1\.key' already exists"
[[ $(sha256sum <"$work/k1.key") == "$sum" ]] || fail "keygen overwrote a key"
expect_exit 0 "$INGOT" keygen -o "$work/k2"

# A signing key that cannot sign: exit 2 before anything is built.
printf 'not a key\n' >"$work/garbage.pem"
for key in "$work/garbage.pem" "$work/k1.pub" "$work/nonexistent.pem"; do
        expect_exit 2 build -o "$work/bad" --sign-key "$key"
        expect_one_error_line
        expect_err "$(basename "$key")"
        [[ -z $(ls -A "$work/bad" 2>/dev/null) ]] || fail "--sign-key $key: something was written"
done

# The signed build: image, manifest and signature, nothing else.
start=$SECONDS
expect_exit 0 build -o "$out" --sign-key "$work/k1.key"
echo "busybox build: $((SECONDS - start))s"
expect_err 'seal +[0-9.]+s'
[[ $(ls -A "$out" | sort | tr '\n' ' ') == "busybox-1.0.0.manifest.json busybox-1.0.0.manifest.json.sig busybox-1.0.0.raw " ]] ||
        { ls -A "$out"; fail "unexpected files in the output directory"; }
[[ $(wc -l <"$man.sig") -eq 1 && $(head -c 88 "$man.sig" | base64 -d | wc -c) -eq 64 ]] ||
        fail "the signature file is not base64 of 64 bytes and a newline"

# The manifest names what it should.
jq -e --argjson size "$(stat -c %s "$img")" '
  .format == "ingot-manifest-1" and .name == "busybox" and .version == "1.0.0" and
  .architecture == "x86-64" and .boot_modes == ["bios", "uefi"] and
  (.created | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$")) and (.source_date_epoch | type) == "number" and
  .inputs.template.file == "busybox.conf" and (.inputs.template.sha256 | test("^[0-9a-f]{64}$")) and
  .inputs.kickstart.file == "minimal.ks" and (.inputs.rootfs.sha256 | test("^[0-9a-f]{64}$")) and
  .image.file == "busybox-1.0.0.raw" and .image.format == "raw" and .image.size == $size and
  (.image.digest | test("^[0-9a-f]{64}$")) and
  .digest == {"algorithm": "sha256-block-list", "block_size": 1048576} and
  .partition_table.type == "gpt" and (.partition_table.ranges[0].start == 0) and
  ([.partitions[].role] | index("root") != null and index("esp") != null) and
  ([.partitions[] | select(.role == "root") | .read_only] == [true]) and
  ([.partitions[] | .blocks | length] == [.partitions[] | (.size + 1048575) / 1048576 | floor]) and
  .verity == null
' "$man" >/dev/null || { jq 'del(.partitions[].blocks, .partition_table.ranges[].blocks)' "$man"; fail "the manifest lacks fields"; }
# ... and agrees with the partition table in the image
expect_exit 0 "$INGOT" inspect --json --no-os "$img"
jq -en --slurpfile m "$man" --slurpfile i "$work/out" '
  $m[0].partition_table.disk_guid == $i[0].disk.uuid and
  ([$m[0].partitions[] | {number, uuid, start, size}] == [$i[0].disk.partitions[] | {number, uuid, start, size}])
' >/dev/null || fail "the manifest's partitions differ from the image's"

# Verify: ok with and without the key.
expect_exit 0 "$INGOT" verify "$img"
expect_out 'ok: 3 partitions .*signature: not checked \(no --key\)'
[[ $(wc -l <"$work/out") -eq 1 ]] || fail "verify printed more than one line"
expect_exit 0 "$INGOT" verify "$img" --key "$work/k1.pub"
expect_out "signature: ok \\($fp1\\)"
expect_out "image digest $(jq -r .image.digest "$man")"
expect_exit 0 "$INGOT" --json verify "$img" --key "$work/k1.pub"
jq -e '.status == "ok" and .signature == "ok" and .difference == null and .partitions_checked == 3' \
        "$work/out" >/dev/null || fail "verify --json: $(cat "$work/out")"

# The wrong key, an unreadable key.
expect_exit 1 "$INGOT" verify "$img" --key "$work/k2.pub"
expect_err 'manifest signature does not verify with .*k2\.pub'
expect_exit 2 "$INGOT" verify "$img" --key "$work/garbage.pem"
expect_err 'not an Ed25519 public key'

# Tamper, on a copy: one byte each in the root partition, the ESP and the
# partition table; each named with the 1 MiB block it lies in.
t=$work/tamper
mkdir "$t"
cp --sparse=always "$img" "$man" "$man.sig" "$t/"
timg=$t/busybox-1.0.0.raw
expect_exit 0 "$INGOT" verify "$timg" --key "$work/k1.pub"
for role in root esp; do
        read -r num name start blk < <(jq -r --arg r "$role" '.partitions[] | select(.role == $r) |
          "\(.number) \(.name) \(.start) \(.blocks | to_entries | map(select(.value != null)) | .[0].key)"' "$man")
        [[ $blk != null ]] || fail "partition '$name' has no data block"
        off=$((start + blk * MiB + 4321))
        flip "$timg" "$off"
        expect_exit 1 "$INGOT" verify "$timg" --key "$work/k1.pub"
        expect_err "partition $num '$name' differs from the manifest at bytes $((start + blk * MiB))-$((start + (blk + 1) * MiB - 1))\$"
        expect_one_error_line
        flip "$timg" "$off"
done
flip "$timg" 1030 # in the primary GPT's entries
expect_exit 1 "$INGOT" verify "$timg"
expect_err "busybox-1\.0\.0\.raw: partition table differs from the manifest at bytes 0-1048575\$"
expect_exit 1 "$INGOT" --json verify "$timg"
jq -e '.status == "differs" and .difference.region == "partition-table" and .difference.start == 0' \
        "$work/out" >/dev/null || fail "verify --json of a tampered image: $(cat "$work/out")"
flip "$timg" 1030
size=$(stat -c %s "$timg")
flip "$timg" $((size - 100)) # in the backup GPT header
expect_exit 1 "$INGOT" verify "$timg"
expect_err "partition table differs from the manifest at bytes [0-9]+-$((size - 1))\$"
flip "$timg" $((size - 100))
expect_exit 0 "$INGOT" verify "$timg" --key "$work/k1.pub"
truncate -s +1M "$timg"
expect_exit 1 "$INGOT" verify "$timg"
expect_err "the disk is $((size + MiB)) bytes, the manifest says $size"
truncate -s "$size" "$timg"

# The manifest edited after signing; a signature that is missing.
tman=$t/busybox-1.0.0.manifest.json
sed -i 's/"version": "1.0.0"/"version": "1.0.1"/' "$tman"
expect_exit 1 "$INGOT" verify "$timg" --key "$work/k1.pub"
expect_err 'manifest signature does not verify'
cp "$man" "$tman"
rm "$tman.sig"
expect_exit 1 "$INGOT" verify "$timg" --key "$work/k1.pub"
expect_err 'is not signed'
expect_exit 0 "$INGOT" verify "$timg"
expect_out 'signature: unsigned'

# Missing or broken inputs: exit 2.
expect_exit 2 "$INGOT" verify "$timg" --manifest "$t/nonexistent.json"
expect_err "cannot read the manifest '.*nonexistent\.json'"
expect_one_error_line
rm "$tman"
expect_exit 2 "$INGOT" verify "$timg"
expect_err "busybox-1\.0\.0\.manifest\.json'"
printf '{"format": "ingot-manifest-1"' >"$tman"
expect_exit 2 "$INGOT" verify "$timg"
expect_err 'is not a valid manifest'
expect_exit 2 "$INGOT" verify "$t/nonexistent.raw" --manifest "$man"

# Rebuilt unsigned from the same inputs: the same manifest bytes, and the
# old signature does not stay beside it.
cp "$man" "$work/first.manifest.json"
expect_exit 0 build -o "$out"
cmp "$work/first.manifest.json" "$man" || fail "two builds from the same inputs gave different manifests"
[[ ! -e $man.sig ]] || fail "a stale signature survived an unsigned build"
[[ $(ls -A "$out" | wc -l) -eq 2 ]] || { ls -A "$out"; fail "stray files in the output directory"; }

# qcow2: the manifest describes the raw disk; verify converts.
expect_exit 0 "$INGOT" build -t busybox -k minimal --version 1.0.2 --format qcow2 --cache-dir "$cache" -o "$out" \
        --sign-key "$work/k1.key"
jq -e '.image.file == "busybox-1.0.2.qcow2" and .image.format == "qcow2"' "$out/busybox-1.0.2.manifest.json" \
        >/dev/null || fail "the qcow2 manifest does not name the qcow2 image"
expect_exit 0 "$INGOT" verify "$out/busybox-1.0.2.qcow2" --key "$work/k1.pub"
expect_out 'ok: 3 partitions'
echo "test-verify: ok"
