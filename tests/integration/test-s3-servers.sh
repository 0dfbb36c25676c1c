# Self-test of the S3 test servers (s3lib.sh, tests/s3/sigv4-proxy.js in
# front of s3rver): awscli's requests verify through the proxy and a wrong
# secret is refused; curl's --aws-sigv4 (the signer ingot uses) verifies,
# and the libcurl 7.88 pitfalls (missing x-amz-content-sha256, unsorted
# query, "?uploads" without "=") and a body that does not match its
# x-amz-content-sha256 are refused without reaching the store; each
# injected fault is seen by the client; the stats count requests and
# bytes; s3_stop (also from the EXIT trap) leaves no process behind.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3lib.sh"

EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

# s3curl METHOD TARGET [CURL-ARGS...]: a request signed by curl through the
# proxy; prints the HTTP status (000 when none), body in $work/body; then
# last_rc prints curl's exit status, last_time the total time in seconds.
s3curl() {
        local method=$1 target=$2 out rc=0
        shift 2
        out=$(curl -sS -o "$work/body" -w '%{http_code} %{time_total}' \
                --aws-sigv4 aws:amz:us-east-1:s3 --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
                -X "$method" "$@" "http://127.0.0.1:$PROXY_PORT$target" 2>"$work/curl.err") || rc=$?
        echo "$rc ${out#* }" >"$work/curl.meta"
        printf '%s\n' "${out%% *}"
}
last_rc() { cut -d' ' -f1 "$work/curl.meta"; }
last_time() { cut -d' ' -f2 "$work/curl.meta"; }
s3get() { s3curl GET "$1" -H "x-amz-content-sha256: $EMPTY_SHA" "${@:2}"; }
s3put() { # TARGET FILE [SHA]
        s3curl PUT "$1" -T "$2" -H "x-amz-content-sha256: ${3:-$(sha256sum <"$2" | cut -d' ' -f1)}"
}
expect_status() { # WANT GOT WHAT
        [[ $2 == "$1" ]] || { cat "$work/body" "$work/curl.err" >&2 2>/dev/null; fail "$3: HTTP $2, expected $1"; }
}
expect_code() { # S3-ERROR-CODE WHAT
        grep -q "<Code>$1</Code>" "$work/body" || { cat "$work/body" >&2; fail "$2: no <Code>$1</Code>"; }
}
stat_is() { # FIELD WANT
        local got
        got=$(proxy_stat "$1")
        [[ $got == "$2" ]] || { proxy_stats >&2; fail "proxy stats: $1 is $got, expected $2"; }
}
stored() { aws_s3 s3api head-object --bucket ingot --key "$1" >/dev/null 2>&1; }
running() { pgrep node | grep -qx "$1"; } # PID: a node process still runs
here=$(cd "$(dirname "$0")" && pwd)

s3_start
[[ $S3_PORT =~ ^[0-9]+$ && $PROXY_PORT =~ ^[0-9]+$ && $S3_PORT != "$PROXY_PORT" ]] || fail "bad ports $S3_PORT $PROXY_PORT"
[[ $S3_URL == "s3://ingot/store?endpoint=http://127.0.0.1:$PROXY_PORT&region=us-east-1" ]] || fail "S3_URL is $S3_URL"
[[ $AWS_ACCESS_KEY_ID == S3RVER && $AWS_SECRET_ACCESS_KEY == S3RVER && $AWS_REGION == us-east-1 ]] ||
        fail "credentials not exported"
stat_is requests 0

# --- awscli through the proxy: every operation verifies -----------------
head -c 300000 /dev/urandom >"$work/small"
key='dir/a b+c~d=é(1).txt'
expect_exit 0 aws_proxy s3api put-object --bucket ingot --key "$key" --body "$work/small"
expect_exit 0 aws_proxy s3api get-object --bucket ingot --key "$key" "$work/small.back"
cmp "$work/small" "$work/small.back" || fail "get-object through the proxy returned other bytes"
expect_exit 0 aws_proxy s3api head-object --bucket ingot --key "$key"
jq -e '.ContentLength == 300000' "$work/out" >/dev/null || fail "head-object: $(cat "$work/out")"
expect_exit 0 aws_proxy s3api list-objects-v2 --bucket ingot --prefix 'dir/' --delimiter / --start-after 'dir/a'
jq -e --arg k "$key" '[.Contents[].Key] == [$k]' "$work/out" >/dev/null || fail "list-objects-v2: $(cat "$work/out")"
# A multipart upload (awscli splits above 8 MiB): ?uploads, ?partNumber&uploadId.
head -c $((9 * 1048576)) /dev/urandom >"$work/big"
expect_exit 0 aws_proxy s3 cp "$work/big" s3://ingot/big/object --only-show-errors
expect_exit 0 aws_s3 s3 cp s3://ingot/big/object "$work/big.back" --only-show-errors
cmp "$work/big" "$work/big.back" || fail "the multipart upload stored other bytes"
expect_exit 0 aws_proxy s3api delete-object --bucket ingot --key "$key"
if stored "$key"; then fail "delete-object through the proxy left the object"; fi
stat_is signature_failures 0
# awscli 2.9 signs the payload over http (no UNSIGNED-PAYLOAD, no aws-chunked),
# so its bodies were checked against x-amz-content-sha256 as well.
stat_is unsigned_payload 0
[[ $(proxy_stat by_method.POST) -ge 2 && $(proxy_stat by_method.PUT) -ge 3 ]] || { proxy_stats; fail "no multipart requests seen"; }
[[ $(proxy_stat bytes_in) -ge $((300000 + 9 * 1048576)) ]] || fail "bytes_in $(proxy_stat bytes_in) < what was uploaded"

# --- a wrong secret is refused, and counted ------------------------------
proxy_reset
AWS_SECRET_ACCESS_KEY=wrong expect_exit 254 aws_proxy s3api put-object --bucket ingot --key wrong --body "$work/small"
expect_err SignatureDoesNotMatch
if stored wrong; then fail "a request with a wrong secret was stored"; fi
AWS_SECRET_ACCESS_KEY=wrong expect_exit 254 aws_proxy s3api list-objects-v2 --bucket ingot
expect_err SignatureDoesNotMatch
stat_is signature_failures 2
stat_is forwarded 0
grep -q 'SignatureDoesNotMatch: PUT /ingot/wrong: .*expected canonical request "PUT\\n/ingot/wrong\\n' "$s3_dir/proxy.err" ||
        { cat "$s3_dir/proxy.err"; fail "the proxy did not log the canonical request it expected"; }
# Unsigned requests: AccessDenied.
code=$(curl -s -o "$work/body" -w '%{http_code}' "http://127.0.0.1:$PROXY_PORT/ingot/big/object")
expect_status 403 "$code" "an unsigned GET"
expect_code AccessDenied "an unsigned GET"
stat_is signature_failures 3

# --- curl --aws-sigv4 (ingot's signer): right and wrong ------------------
proxy_reset
printf 'block one\n' >"$work/b1"
expect_status 200 "$(s3put /ingot/c/b1 "$work/b1")" "curl PUT"
expect_status 200 "$(s3get /ingot/c/b1)" "curl GET"
cmp "$work/b1" "$work/body" || fail "curl GET returned other bytes"
expect_status 200 "$(s3get '/ingot?list-type=2&prefix=c%2F')" "curl list, sorted query"
grep -q '<Key>c/b1</Key>' "$work/body" || fail "curl list: $(cat "$work/body")"
stat_is signature_failures 0
# A body that is not the one x-amz-content-sha256 names: refused, not stored.
printf 'block two\n' >"$work/b2"
expect_status 403 "$(s3put /ingot/c/b2 "$work/b2" "$(sha256sum <"$work/b1" | cut -d' ' -f1)")" "a tampered body"
expect_code XAmzContentSHA256Mismatch "a tampered body"
if stored c/b2; then fail "a tampered body reached the store"; fi
# libcurl 7.88 pitfalls (tech.md §1.1), each refused as S3 would.
expect_status 400 "$(s3curl PUT /ingot/c/b3 -T "$work/b2")" "PUT without x-amz-content-sha256"
expect_code InvalidRequest "PUT without x-amz-content-sha256"
expect_status 411 "$(s3curl PUT /ingot/c/b3 -T "$work/b2" -H 'Transfer-Encoding: chunked' \
        -H "x-amz-content-sha256: $(sha256sum <"$work/b2" | cut -d' ' -f1)")" "a chunked PUT"
expect_code MissingContentLength "a chunked PUT"
expect_status 403 "$(s3curl POST '/ingot/c/mp?uploads' -H "x-amz-content-sha256: $EMPTY_SHA")" "POST ?uploads"
expect_code SignatureDoesNotMatch "POST ?uploads"
expect_status 200 "$(s3curl POST '/ingot/c/mp?uploads=' -H "x-amz-content-sha256: $EMPTY_SHA")" "POST ?uploads="
upload=$(sed -n 's:.*<UploadId>\([^<]*\)</UploadId>.*:\1:p' "$work/body")
[[ -n $upload ]] || fail "no UploadId in $(cat "$work/body")"
expect_status 403 "$(s3put "/ingot/c/mp?uploadId=$upload&partNumber=1" "$work/b1")" "unsorted query"
expect_code SignatureDoesNotMatch "unsorted query"
expect_status 200 "$(s3put "/ingot/c/mp?partNumber=1&uploadId=$upload" "$work/b1")" "sorted query"
# Hand-made Authorization headers: a wrong signature, an unsigned x-amz-* header.
now=$(date -u +%Y%m%dT%H%M%SZ)
auth="AWS4-HMAC-SHA256 Credential=S3RVER/${now:0:8}/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=$(printf '0%.0s' {1..64})"
code=$(curl -s -o "$work/body" -w '%{http_code}' -H "Authorization: $auth" -H "x-amz-date: $now" \
        -H "x-amz-content-sha256: $EMPTY_SHA" "http://127.0.0.1:$PROXY_PORT/ingot/c/b1")
expect_status 403 "$code" "a wrong signature"
expect_code SignatureDoesNotMatch "a wrong signature"
grep -q '<CanonicalRequest>GET' "$work/body" || fail "the error does not show the canonical request"
code=$(curl -s -o "$work/body" -w '%{http_code}' -H "Authorization: $auth" -H "x-amz-date: $now" \
        -H "x-amz-content-sha256: $EMPTY_SHA" -H 'x-amz-meta-x: y' "http://127.0.0.1:$PROXY_PORT/ingot/c/b1")
expect_status 403 "$code" "an unsigned x-amz-meta-x header"
expect_code AccessDenied "an unsigned x-amz-meta-x header"
stat_is signature_failures 7
[[ $(proxy_stat failures_by_code.SignatureDoesNotMatch) -ge 2 ]] || fail "failures_by_code: $(proxy_stats)"

# --- faults, seen from the client side -----------------------------------
head -c 100000 /dev/urandom >"$work/obj"
expect_status 200 "$(s3put /ingot/f/obj "$work/obj")" "PUT f/obj"
proxy_reset

proxy_faults '[{"kind": "503", "method": "GET", "key": "^f/obj$", "every": 2}]'
got=
for _ in 1 2 3 4; do got+=" $(s3get /ingot/f/obj)"; done
[[ $got == " 200 503 200 503" ]] || fail "every 2nd GET should be 503, got$got"
expect_code ServiceUnavailable "injected 503"
expect_status 200 "$(s3put /ingot/f/other "$work/b1")" "a PUT (not matched by the GET rule)"
stat_is faults_injected 2

proxy_faults '[{"kind": "slowdown", "times": 1}]'
expect_status 503 "$(s3get /ingot/f/obj)" "SlowDown"
expect_code SlowDown "SlowDown"
expect_status 200 "$(s3get /ingot/f/obj)" "after times: 1"

proxy_faults '[{"kind": "drop", "method": "GET"}]'
expect_status 000 "$(s3get /ingot/f/obj)" "dropped connection"
rc=$(last_rc)
[[ $rc == 52 || $rc == 56 ]] || fail "dropped connection: curl exit $rc, expected 52 or 56"
proxy_faults '[{"kind": "drop", "reset": true}]'
expect_status 000 "$(s3get /ingot/f/obj)" "reset connection"
rc=$(last_rc)
[[ $rc == 56 || $rc == 52 ]] || fail "reset connection: curl exit $rc, expected 56 or 52"

proxy_faults '[{"kind": "stall"}]'
expect_status 000 "$(s3get /ingot/f/obj -m 3)" "stall forever"
[[ $(last_rc) == 28 ]] || fail "stall: curl exit $(last_rc), expected 28 (timeout)"
proxy_faults '[{"kind": "stall", "seconds": 1}]'
expect_status 200 "$(s3get /ingot/f/obj -m 10)" "stall 1 s"
cmp "$work/obj" "$work/body" || fail "a stalled GET returned other bytes"
t=$(last_time)
[[ ${t%.*} -ge 1 ]] || fail "a 1 s stall took ${t}s"

proxy_faults '[]'
s3get /ingot/f/obj >/dev/null
fast=$(last_time)
proxy_faults '[{"kind": "slow", "delay_ms": 700}]'
expect_status 200 "$(s3get /ingot/f/obj)" "slow response"
cmp "$work/obj" "$work/body" || fail "a slow GET returned other bytes"
t=$(last_time)
awk -v s="$t" -v f="$fast" 'BEGIN { exit !(s >= 0.7 && s > f + 0.5) }' ||
        fail "a 700 ms slow-down took ${t}s (unfaulted: ${fast}s)"

proxy_faults '[{"kind": "500"}]'
for _ in 1 2 3; do
        expect_status 500 "$(s3get /ingot/f/obj)" "always 500"
        expect_code InternalError "always 500"
done
expect_status 500 "$(s3put /ingot/f/new "$work/b1")" "always 500 (PUT)"
if stored f/new; then fail "a PUT answered 500 (not forwarded) was stored"; fi

# "forward": the upstream stores the PUT, the client sees the fault.
proxy_faults '[{"kind": "503", "method": "PUT", "forward": true}]'
expect_status 503 "$(s3put /ingot/f/fwd "$work/b1")" "forwarded 503"
stored f/fwd || fail "a forwarded-then-503 PUT was not stored"

# A seeded probability is deterministic, and proxy_reset rewinds it.
proxy_faults '[{"kind": "503", "probability": 0.5, "seed": 7}]'
run20() { local s=""; for _ in $(seq 20); do s+=$(s3get /ingot/f/obj | cut -c1); done; echo "$s"; }
p1=$(run20)
proxy_reset
p2=$(run20)
[[ $p1 == "$p2" ]] || fail "seeded faults differ after a reset: $p1 vs $p2"
n5=$(tr -cd 5 <<<"$p1" | wc -c)
[[ $n5 -ge 3 && $n5 -le 17 ]] || fail "probability 0.5 fired $n5 times out of 20"
stat_is faults_injected "$n5"
stat_is faults_by_kind.503 "$n5"

# Bad rules are refused with a message.
if (proxy_faults '[{"kind": "nope"}]') 2>"$work/err"; then fail "an unknown fault kind was accepted"; fi
expect_err "unknown kind 'nope'"
if (proxy_faults '[{"kind": "503", "evry": 2}]') 2>"$work/err"; then fail "an unknown field was accepted"; fi
expect_err "unknown field 'evry'"
proxy_faults '[]'

# --- stats: requests and bytes -------------------------------------------
proxy_reset
stat_is requests 0
head -c 4194304 /dev/urandom >"$work/4m"
expect_status 200 "$(s3put /ingot/s/4m "$work/4m")" "PUT 4 MiB"
expect_status 200 "$(s3get /ingot/s/4m)" "GET 4 MiB"
cmp "$work/4m" "$work/body" || fail "GET 4 MiB returned other bytes"
expect_status 200 "$(s3put /ingot/s/b1 "$work/b1")" "PUT b1"
stat_is requests 3
stat_is forwarded 3
stat_is bytes_in $((4194304 + 10))
[[ $(proxy_stat bytes_out) -ge 4194304 ]] || fail "bytes_out $(proxy_stat bytes_out) < 4 MiB"
[[ $(proxy_count PUT '^s/') -eq 2 && $(proxy_count 'GET|HEAD' '^s/4m$') -eq 1 ]] ||
        { cat "$PROXY_LOG"; fail "the request log misses the requests"; }
[[ $(s3_keys s/ | tr '\n' ' ') == "s/4m s/b1 " ]] || fail "s3_keys s/: $(s3_keys s/)"
proxy_reset
[[ ! -s $PROXY_LOG && $(proxy_count PUT .) -eq 0 ]] || fail "proxy_reset did not empty the request log"

# --- faults from a file at start; data kept across a restart ---------------
printf '[{"kind": "503", "method": "GET", "every": 1, "times": 1}]\n' >"$work/faults.json"
old_pids=("${s3_pids[@]}")
s3_stop
for pid in "${old_pids[@]}"; do
        if running "$pid"; then fail "s3_stop left pid $pid running"; fi
done
s3_start --faults "$work/faults.json" --prefix ""
[[ $S3_URL == "s3://ingot?endpoint=http://127.0.0.1:$PROXY_PORT&region=us-east-1" ]] || fail "S3_URL is $S3_URL"
expect_status 503 "$(s3get /ingot/s/b1)" "a fault rule from --faults"
expect_status 200 "$(s3get /ingot/s/b1)" "after the --faults rule"
cmp "$work/b1" "$work/body" || fail "the data did not survive a restart"

# --- the EXIT trap stops the servers of a failing test ---------------------
cat >"$work/child.sh" <<EOF
source "$here/lib.sh"
source "$here/s3lib.sh"
s3_start
echo "\${s3_pids[*]} \$work" >"$work/child.info"
false
EOF
rc=0
INGOT_PREFIX=${INGOT_PREFIX:-/nonexistent} bash "$work/child.sh" >"$work/child.out" 2>&1 || rc=$?
[[ $rc -eq 1 ]] || { cat "$work/child.out"; fail "the child test exited $rc, expected 1"; }
read -r p1 p2 cwork <"$work/child.info"
for pid in "$p1" "$p2"; do
        if running "$pid"; then fail "the EXIT trap left pid $pid running"; fi
done
[[ ! -e $cwork ]] || fail "the EXIT trap no longer removes \$work"

s3_pids_now=("${s3_pids[@]}")
s3_stop
for pid in "${s3_pids_now[@]}"; do
        if running "$pid"; then fail "s3_stop left pid $pid running"; fi
done
[[ -z $(pgrep -f "$S3_DATA") ]] || fail "an s3rver of this test is still running"
echo "s3 test servers: ok"
