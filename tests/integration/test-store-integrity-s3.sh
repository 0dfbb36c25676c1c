# The store-integrity suite (test-store-integrity.sh) against the S3
# backend: s3rver behind the SigV4-verifying proxy, which also gives the
# store S3's conditional writes (If-None-Match / If-Match; s3rver 3.7.1
# alone ignores them, see tests/s3/sigv4-proxy.js). The kill points here
# are the named test points only: strace's rename/unlink table is the file
# store's (an S3 store has no renames). What the suite looks at behind
# ingot's back reads s3rver's files directly.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"
s3_start
export INGOT_S3_RETRY_BASE_MS=20
STORE=$S3_URL
STORE_KIND=s3
objects=$S3_DATA/$S3_BUCKET/$S3_PREFIX

store_keys() { (cd "$objects" 2>/dev/null && find "$1" -name '*._S3rver_object' 2>/dev/null | sed 's/\._S3rver_object$//' | LC_ALL=C sort) || true; }
store_read() { cat "$objects/$1._S3rver_object"; }
# writes go through awscli, so s3rver keeps its metadata (ETag, length) right
store_write() { aws_s3 s3 cp --quiet - "s3://$S3_BUCKET/$S3_PREFIX/$1"; }
store_rm() { aws_s3 s3 rm --quiet "s3://$S3_BUCKET/$S3_PREFIX/$1"; }
store_has() { [[ -f $objects/$1._S3rver_object ]]; }
# an S3 put is one request: nothing half-written to leave behind
store_leftovers() { :; }
# gc with every DELETE answered 0.2 s late
slow_gc() {
        proxy_faults '[{"kind":"slow","method":"DELETE","delay_ms":200}]'
        "$INGOT" gc --grace 0 --store "$STORE"
        local rc=$?
        proxy_faults '[]'
        return $rc
}

source "$(dirname "$0")/test-store-integrity.sh"

[[ $(proxy_stat signature_failures) -eq 0 ]] || { proxy_stats; fail "the proxy refused some of ingot's requests"; }
[[ $(proxy_stat conditional_failures) -ge 2 ]] || { proxy_stats; fail "no conditional write was ever refused"; }
echo "through the proxy: $(proxy_stat requests) requests, $(proxy_stat conditional_failures) conditional writes refused"
