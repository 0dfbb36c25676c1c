# The s3:// store against s3rver behind the SigV4-verifying proxy: every
# operation (tests/s3/store-check), the signatures checked on every request,
# a wrong secret refused, injected faults survived, and a server that
# always fails given up on within the retry budget.
#   STORE_CHECK  the store-check binary (default: beside the build of $INGOT)
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"
cd "$work"

store_check=${STORE_CHECK:-}
if [[ -z $store_check ]]; then
        # $INGOT is build/X/inst/bin/ingot in scripts/test, or build/X/ingot
        for c in "$(dirname "$INGOT")/../../tests/s3/store-check" "$(dirname "$INGOT")/tests/s3/store-check"; do
                [[ -x $c ]] && { store_check=$c; break; }
        done
fi
[[ -n $store_check && -x $store_check ]] ||
        fail "store-check not found (make check builds it; or set STORE_CHECK)"

# Short timeouts so the fault cases take seconds: a stall is detected after
# 3 s, backoffs start at 20 ms (the cap stays 5 s).
export INGOT_S3_STALL_TIMEOUT=3 INGOT_S3_RETRY_BASE_MS=20

s3_start

# 1. every operation, signed right: the proxy refused nothing
expect_exit 0 "$store_check" "$S3_URL"
expect_out '^store-check: ok'
[[ $(proxy_stat signature_failures) -eq 0 ]] || fail "the proxy refused $(proxy_stat signature_failures) signatures"
[[ $(proxy_stat by_method.PUT) -ge 40 ]] || fail "expected at least 40 PUTs, got $(proxy_stat by_method.PUT)"
[[ $(proxy_stat unsigned_payload) -eq 0 ]] || fail "UNSIGNED-PAYLOAD was sent"
# the same without a key prefix, and with the endpoint from the environment
INGOT_S3_ENDPOINT=$S3_ENDPOINT expect_exit 0 "$store_check" -n 4 -j 2 "s3://$S3_BUCKET"
[[ $(proxy_stat signature_failures) -eq 0 ]] || fail "the proxy refused a signature (no prefix)"
# an independent client sees nothing left behind
aws_s3 s3 ls "s3://$S3_BUCKET/" --recursive >"$work/ls" || fail "aws s3 ls failed"
[[ ! -s $work/ls ]] || { cat "$work/ls" >&2; fail "store-check left objects behind"; }

# credentials never show, not even with -v
expect_exit 0 "$store_check" -v -n 3 -s 1000 "$S3_URL"
! grep -q "$AWS_SECRET_ACCESS_KEY:\|Authorization\|Signature=" "$work/err" "$work/out" ||
        fail "a credential or signature was printed"

# 2. a wrong secret: refused at once, a clear message, non-zero exit
proxy_reset
AWS_SECRET_ACCESS_KEY=not-the-secret expect_exit 1 "$store_check" -n 3 -s 1000 "$S3_URL"
expect_err "access denied \(check the credentials\)"
[[ $(grep -c 'access denied' "$work/err") -eq 1 ]] || { cat "$work/err" >&2; fail "the refusal was not said once"; }
! grep -q 'not-the-secret' "$work/err" || fail "the secret was printed"
[[ $(proxy_stat signature_failures) -ge 1 ]] || fail "the proxy saw no bad signature"
[[ $(proxy_stat requests) -le 8 ]] || fail "refused requests were retried or more were sent ($(proxy_stat requests))"
# a GET's refusal carries S3's error code (a HEAD's answer has no body)
AWS_SECRET_ACCESS_KEY=not-the-secret expect_exit 1 "$store_check" -G some/key "$S3_URL"
expect_err "s3 GET 'some/key' in '.*': access denied \(check the credentials\): HTTP 403 SignatureDoesNotMatch: "
# no credentials anywhere: -EACCES naming where it looked
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY AWS_SHARED_CREDENTIALS_FILE="$work/none" \
        "$store_check" "$S3_URL" >"$work/out" 2>"$work/err" && fail "store-check without credentials succeeded"
expect_err "no S3 credentials: .*'$work/none' cannot be read"
# a missing bucket: refused at once
expect_exit 1 "$store_check" -n 3 -s 1000 "s3://no-such-bucket?endpoint=$S3_ENDPOINT"
expect_err "no bucket 'no-such-bucket'"

# 3. transient faults on some requests: everything still arrives intact
proxy_reset
proxy_faults '[
  {"kind": "503", "method": "PUT", "every": 5},
  {"kind": "slowdown", "method": "PUT", "every": 7, "after": 1},
  {"kind": "drop", "method": "PUT", "every": 11, "after": 2},
  {"kind": "drop", "method": "GET", "every": 9, "reset": true},
  {"kind": "stall", "method": "GET", "every": 13, "after": 3, "seconds": 30},
  {"kind": "503", "method": "HEAD", "every": 6},
  {"kind": "500", "method": "DELETE", "every": 4}
]'
expect_exit 0 "$store_check" "$S3_URL"
expect_out '^store-check: ok'
[[ $(proxy_stat faults_injected) -ge 10 ]] || fail "only $(proxy_stat faults_injected) faults were injected"
[[ $(proxy_stat signature_failures) -eq 0 ]] || fail "a retried request was not signed right"

# 4. a server that always answers 500: given up within the budget, clearly
proxy_reset
proxy_faults '[{"kind": "500"}]'
start=$SECONDS
expect_exit 1 "$store_check" -n 20 -j 4 -s 1000 "$S3_URL"
expect_err "gave up after 6 attempts: HTTP 500"
((SECONDS - start < 60)) || fail "giving up took $((SECONDS - start)) s"
# waiting items free their slot, so all 20 may start, 6 attempts each at most
[[ $(proxy_stat requests) -le $((20 * 6)) ]] || fail "too many attempts: $(proxy_stat requests)"
proxy_faults '[]'

echo "PASS: test-store-s3"
