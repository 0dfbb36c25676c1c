# The catalog suite (test-catalog.sh) against the S3 backend: s3rver behind
# the SigV4-verifying proxy (tests/s3/sigv4-proxy.js), so every request
# ingot makes must carry a signature and payload hash that verify. Then, on
# top: awscli, an independent client, lists and downloads what ingot stored
# and checks records and blocks; a wrong secret is refused with no record;
# a push through injected faults (503, SlowDown, dropped connections, a
# stalled response) completes with the right bytes; a server that always
# answers 500 fails the push within the retry budget, with no record.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"
s3_start
export INGOT_S3_RETRY_BASE_MS=20 INGOT_S3_STALL_TIMEOUT=3
STORE=$S3_URL
objects=$S3_DATA/$S3_BUCKET/$S3_PREFIX

# ---- hooks for test-catalog.sh: its looks behind ingot's back go to
# s3rver's files (fast); what ingot itself does goes through the proxy ----
store_keys() { (cd "$objects" 2>/dev/null && find "$1" -name '*._S3rver_object' 2>/dev/null | sed 's/\._S3rver_object$//' | LC_ALL=C sort) || true; }
store_snapshot() { (cd "$objects" && find . -name '*._S3rver_object' -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum); }
store_read() { cat "$objects/$1._S3rver_object"; }
store_write() { cat >"$objects/$1._S3rver_object"; }
store_has() { [[ -f $objects/$1._S3rver_object ]]; }
# each block PUT answered 0.4 s late: the push is long enough to kill
slow_push() {
        proxy_faults '[{"kind":"slow","method":"PUT","key":"blocks/","delay_ms":400}]'
        exec "$INGOT" push "$@" --store "$STORE"
}

source "$(dirname "$0")/test-catalog.sh"
proxy_faults '[]'

# ---- every request ingot made verified ----
[[ $(proxy_stat signature_failures) -eq 0 ]] || { proxy_stats; fail "the proxy refused some of ingot's requests"; }
echo "requests through the proxy: $(proxy_stat requests), signature failures: 0"

# ---- awscli, the independent client, sees the same store ----
aws_s3 s3 ls --recursive "s3://$S3_BUCKET/$S3_PREFIX/images/" >"$work/ls"
grep -q "images/$id1.json" "$work/ls" || { cat "$work/ls"; fail "awscli does not list images/$id1.json"; }
aws_s3 s3 cp --quiet "s3://$S3_BUCKET/$S3_PREFIX/images/$id1.json" "$work/aws-rec.json"
jq -e --arg id "$id1" '.image_id == $id and .state == "available"' "$work/aws-rec.json" >/dev/null ||
        fail "the record awscli downloaded"
aws_s3 s3 cp --quiet "s3://$S3_BUCKET/$S3_PREFIX/blocklists/$id1.json" "$work/aws-bl.json"
n=0
for h in $(jq -r '.blocks[] | select(. != null)' "$work/aws-bl.json" | sort -u | head -n 5); do
        aws_s3 s3 cp --quiet "s3://$S3_BUCKET/$S3_PREFIX/blocks/$h" "$work/aws-block"
        [[ $(sha256sum <"$work/aws-block" | cut -d' ' -f1) == "$h" ]] || fail "blocks/$h does not hash to its name"
        n=$((n + 1))
done
[[ $n -ge 1 ]] || fail "no blocks in the block list awscli downloaded"
echo "awscli: record, block list and $n blocks check out"

# ---- a wrong secret is refused: no record ----
expect_exit 0 "$INGOT" build -t busybox -k "$work/c.ks" --version 3.0.0 --cache-dir "$cache" -o "$out"
img3=$out/busybox-3.0.0.raw
expect_exit 1 env AWS_SECRET_ACCESS_KEY=wrong "$INGOT" push "$img3" --store "$STORE"
expect_err 'access denied'
grep -q wrong "$work/err" && fail "the secret appeared in the error output"
store_keys images/ | xargs -r -I{} cat "$objects/{}._S3rver_object" | jq -r .version | grep -qx 3.0.0 &&
        fail "a refused push left a record"

# ---- faults on some requests: the push still completes, byte for byte ----
proxy_reset
proxy_faults '[{"kind":"503","method":"PUT","key":"blocks/","every":5,"times":3},
               {"kind":"slowdown","method":"PUT","key":"blocks/","every":7,"times":2},
               {"kind":"drop","method":"PUT","key":"blocks/","every":11,"times":2},
               {"kind":"drop","reset":true,"method":"HEAD|GET","every":6,"times":2},
               {"kind":"stall","method":"PUT","key":"blocks/","every":13,"times":1,"seconds":30}]'
expect_exit 0 "$INGOT" push "$img3" --store "$STORE" --json
id3=$(jq -r .image_id "$work/out")
[[ $(proxy_stat faults_injected) -ge 5 ]] || { proxy_stats; fail "the faults were not injected"; }
echo "push through faults: $(proxy_stat faults_injected) faults injected, $id3 available"
proxy_faults '[]'
expect_exit 0 "$INGOT" pull "$id3" --store "$STORE" -o "$work/p3.raw"
cmp "$img3" "$work/p3.raw" || fail "the image pushed through faults does not pull back the same"

# ---- a server that always answers 500: the push gives up in its budget ----
expect_exit 0 "$INGOT" build -t busybox -k "$work/c.ks" --version 3.0.1 --cache-dir "$cache" -o "$out"
proxy_faults '[{"kind":"500"}]'
start=$SECONDS
expect_exit 1 "$INGOT" push "$out/busybox-3.0.1.raw" --store "$STORE"
took=$((SECONDS - start))
expect_err 'gave up after [0-9]+ attempts'
[[ $took -lt 120 ]] || fail "the push took ${took}s to give up"
proxy_faults '[]'
store_keys images/ | xargs -r -I{} cat "$objects/{}._S3rver_object" | jq -r .version | grep -qx 3.0.1 &&
        fail "a failed push left a record"
echo "always 500: gave up after ${took}s"
echo "test-catalog-s3: ok"
