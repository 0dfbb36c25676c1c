# S3 test servers for the integration tests: s3rver (the store) behind
# tests/s3/sigv4-proxy.js (verifies every request's SigV4 signature and
# payload hash, injects faults). Source it after lib.sh:
#
#   source "$(dirname "$0")/lib.sh"
#   source "$(dirname "$0")/s3lib.sh"
#   s3_start                      # or: s3_start --faults FILE --prefix P
#   "$INGOT" push --store "$S3_URL" ...
#   [[ $(proxy_stat signature_failures) -eq 0 ]] || fail ...
#
# Functions
#   s3_start [--faults FILE] [--prefix P] [--secret S] [--proxy-arg ARG]...
#       Starts s3rver (data in $work/s3/data, kept across s3_stop/s3_start,
#       bucket "ingot" created) and the proxy in front of it, both on
#       127.0.0.1 with free ports, and waits until both answer. --faults: the
#       proxy's initial fault rules (JSON file; format in sigv4-proxy.js).
#       --prefix: the key prefix in S3_URL (default "store"; may be empty).
#       --secret: the secret the proxy expects (default S3RVER).
#       --proxy-arg: any other sigv4-proxy.js argument (repeatable).
#       Registers s3_stop on EXIT (before lib.sh's clean-up; the test's exit
#       status is kept). On failure the proxy's stderr is shown.
#   s3_stop            stops both servers (TERM, then KILL); idempotent.
#   proxy_faults JSON  replaces the proxy's fault rules ('[]' clears them).
#   proxy_stats        prints the proxy's stats JSON: requests, forwarded,
#                      signature_failures, faults_injected, bytes_in (request
#                      body bytes from clients = what ingot uploaded),
#                      bytes_out (response body bytes to clients = what ingot
#                      downloaded), unsigned_payload, by_method, by_status,
#                      failures_by_code, faults_by_kind. signature_failures
#                      counts every request the proxy refused: bad signature,
#                      body not matching x-amz-content-sha256, unsigned
#                      request or x-amz-* header, missing
#                      x-amz-content-sha256, chunked PUT (by code in
#                      failures_by_code); such requests never reach s3rver.
#   proxy_stat FIELD   prints one field of it (jq path without the dot, e.g.
#                      signature_failures or by_method.PUT; 0 when absent).
#   proxy_reset        zeroes the stats and the fault rules' counters, and
#                      empties PROXY_LOG.
#   proxy_count METHOD KEY-REGEX
#                      prints how many METHOD requests (regex, anchored) on
#                      keys matching KEY-REGEX (jq test(), the key is the
#                      path after /ingot/) got a 2xx answer, from PROXY_LOG:
#                      e.g. proxy_count PUT '^store/blocks/'.
#   s3_keys [PREFIX]   lists the keys under PREFIX in bucket ingot, sorted, one
#                      a line (awscli against s3rver directly).
#   aws_s3 ARGS...     Debian's awscli against s3rver DIRECTLY (no proxy), the
#                      independent client: "aws_s3 s3 ls s3://ingot/store/",
#                      "aws_s3 s3api head-object --bucket ingot --key K"
#                      (ARGS not starting with s3/s3api get "s3" prepended).
#   aws_proxy ARGS...  the same through the proxy (signed, verified).
# Variables exported by s3_start
#   S3_PORT     s3rver's port (direct, unverified)
#   PROXY_PORT  the proxy's port
#   S3_BUCKET   ingot          S3_PREFIX  the prefix (default store)
#   S3_ENDPOINT http://127.0.0.1:$PROXY_PORT
#   S3_URL      s3://ingot/$S3_PREFIX?endpoint=$S3_ENDPOINT&region=us-east-1
#               (s3://ingot?endpoint=... when the prefix is empty)
#   AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
#   AWS_DEFAULT_REGION=us-east-1 (AWS_SESSION_TOKEN and AWS_PROFILE unset)
#   PROXY_LOG   the proxy's request log, one JSON line per S3 request:
#               {"method","path","key","status","bytes_in","fault","code"}
#   S3_DATA     s3rver's directory (objects as <bucket>/<key>._S3rver_object)
# awscli: /usr/bin/aws (Debian 12's 2.9.19; AWS_CLI overrides). Over http it
# signs the payload (x-amz-content-sha256 = SHA-256 of the body, no
# UNSIGNED-PAYLOAD, no aws-chunked), so the proxy checks its bodies too.

s3_top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
s3_node_modules=$s3_top/tests/node_modules
s3_proxy_js=$s3_top/tests/s3/sigv4-proxy.js
s3_dir=${work:?source lib.sh first}/s3
s3_pids=()
s3_trap_set=
S3_DATA=$s3_dir/data
PROXY_LOG=$s3_dir/proxy-requests.jsonl

_s3_die() {
        echo "FAIL: s3lib: $*" >&2
        exit 1
}

# _s3_wait_line FILE ERRFILE REGEX PID WHAT: waits (60 s) for a line
# matching REGEX in FILE, prints its first capture group.
_s3_wait_line() {
        local file=$1 errfile=$2 re=$3 pid=$4 what=$5 i line
        for ((i = 0; i < 600; i++)); do
                line=$(grep -Eom1 "$re" "$file" 2>/dev/null || true)
                if [[ -n $line ]]; then
                        [[ $line =~ $re ]] && { printf '%s\n' "${BASH_REMATCH[1]}"; return 0; }
                fi
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
        done
        cat "$file" "$errfile" >&2 2>/dev/null || true
        _s3_die "$what did not start"
}

_s3_on_exit() {
        local rc=$?
        if [[ $rc -ne 0 && -s $s3_dir/proxy.err ]]; then
                echo "--- sigv4-proxy stderr (last 40 lines)" >&2
                tail -n 40 "$s3_dir/proxy.err" >&2 || true
        fi
        s3_stop || true
}

s3_start() {
        local faults='' secret=S3RVER proxy_args=()
        S3_PREFIX=store
        while (($#)); do
                case $1 in
                --faults) faults=$2; shift 2 ;;
                --prefix) S3_PREFIX=$2; shift 2 ;;
                --secret) secret=$2; shift 2 ;;
                --proxy-arg) proxy_args+=("$2"); shift 2 ;;
                *) _s3_die "s3_start: unknown argument '$1'" ;;
                esac
        done
        ((${#s3_pids[@]} == 0)) || _s3_die "s3_start: the servers are already running"
        [[ -x $s3_node_modules/.bin/s3rver ]] ||
                _s3_die "$s3_node_modules/.bin/s3rver is missing: run scripts/setup"
        command -v node >/dev/null || _s3_die "node is missing: run scripts/setup"
        command -v curl >/dev/null || _s3_die "curl is missing"
        [[ -z $faults || -r $faults ]] || _s3_die "s3_start: cannot read $faults"

        if [[ -z $s3_trap_set ]]; then
                # Run before whatever EXIT trap lib.sh (or the test) set.
                local prev
                prev=$(trap -p EXIT)
                eval "set -- $prev"
                # shellcheck disable=SC2064 # the previous trap's text, now
                trap "_s3_on_exit; ${3-}" EXIT
                s3_trap_set=1
        fi

        mkdir -p "$S3_DATA"
        : >"$s3_dir/s3rver.out"
        "$s3_node_modules/.bin/s3rver" -d "$S3_DATA" -a 127.0.0.1 -p 0 --silent \
                --configure-bucket ingot >"$s3_dir/s3rver.out" 2>"$s3_dir/s3rver.err" </dev/null &
        s3_pids+=($!)
        S3_PORT=$(_s3_wait_line "$s3_dir/s3rver.out" "$s3_dir/s3rver.err" 'S3rver listening on 127\.0\.0\.1:([0-9]+)' $! s3rver)

        local args=(--upstream "http://127.0.0.1:$S3_PORT" --secret "$secret" --log "$PROXY_LOG")
        [[ -z $faults ]] || args+=(--faults "$faults")
        : >"$s3_dir/proxy.out"
        node "$s3_proxy_js" "${args[@]}" "${proxy_args[@]}" \
                >"$s3_dir/proxy.out" 2>"$s3_dir/proxy.err" </dev/null &
        s3_pids+=($!)
        PROXY_PORT=$(_s3_wait_line "$s3_dir/proxy.out" "$s3_dir/proxy.err" '^listening ([0-9]+)$' $! sigv4-proxy)

        # Both answer: s3rver lists its buckets, the proxy its stats.
        local i ok=
        for ((i = 0; i < 100; i++)); do
                if curl -sf -o /dev/null "http://127.0.0.1:$S3_PORT/" &&
                        curl -sf -o /dev/null "http://127.0.0.1:$PROXY_PORT/__proxy/stats"; then
                        ok=1
                        break
                fi
                sleep 0.1
        done
        [[ -n $ok ]] || _s3_die "s3rver (port $S3_PORT) or the proxy (port $PROXY_PORT) does not answer"

        S3_BUCKET=ingot
        S3_ENDPOINT=http://127.0.0.1:$PROXY_PORT
        S3_URL="s3://ingot${S3_PREFIX:+/$S3_PREFIX}?endpoint=$S3_ENDPOINT&region=us-east-1"
        AWS_ACCESS_KEY_ID=S3RVER
        AWS_SECRET_ACCESS_KEY=S3RVER
        AWS_REGION=us-east-1
        AWS_DEFAULT_REGION=us-east-1
        export S3_PORT PROXY_PORT S3_BUCKET S3_PREFIX S3_ENDPOINT S3_URL PROXY_LOG S3_DATA \
                AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_DEFAULT_REGION
        unset AWS_SESSION_TOKEN AWS_PROFILE
}

s3_stop() {
        local pid i alive
        ((${#s3_pids[@]})) || return 0
        for pid in "${s3_pids[@]}"; do
                kill -TERM "$pid" 2>/dev/null || true
        done
        for ((i = 0; i < 50; i++)); do
                alive=
                for pid in "${s3_pids[@]}"; do
                        kill -0 "$pid" 2>/dev/null && alive=1
                done
                [[ -n $alive ]] || break
                sleep 0.1
        done
        for pid in "${s3_pids[@]}"; do
                kill -KILL "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
        done
        s3_pids=()
        return 0
}

_s3_proxy_curl() { # METHOD PATH [DATA]
        [[ -n ${PROXY_PORT-} ]] || _s3_die "the proxy is not running (s3_start)"
        local out rc=0
        if (($# > 2)); then
                out=$(curl -sS -X "$1" --data-binary "$3" -H 'Content-Type: application/json' \
                        -w '\n%{http_code}' "http://127.0.0.1:$PROXY_PORT$2") || rc=$?
        else
                out=$(curl -sS -X "$1" -w '\n%{http_code}' "http://127.0.0.1:$PROXY_PORT$2") || rc=$?
        fi
        ((rc == 0)) || _s3_die "$1 $2: curl exit $rc"
        [[ ${out##*$'\n'} == 200 ]] || _s3_die "$1 $2: ${out%$'\n'*}"
        printf '%s\n' "${out%$'\n'*}"
}

proxy_faults() { _s3_proxy_curl POST /__proxy/faults "$1" >/dev/null; }
proxy_stats() { _s3_proxy_curl GET /__proxy/stats; }
proxy_reset() {
        _s3_proxy_curl POST /__proxy/reset >/dev/null
        : >"$PROXY_LOG" # the proxy appends (O_APPEND): writes go on at 0
}
proxy_count() {
        jq -s --arg m "^(?:$1)\$" --arg k "$2" \
                '[.[] | select((.method | test($m)) and (.key | test($k)) and .status >= 200 and .status < 300)] | length' \
                "$PROXY_LOG"
}
s3_keys() {
        aws_s3 s3api list-objects-v2 --bucket ingot --prefix "${1-}" --output json |
                jq -r '(.Contents // [])[].Key' | LC_ALL=C sort
}
proxy_stat() {
        local json
        json=$(proxy_stats)
        jq -r --arg p "$1" 'getpath($p | split(".")) // 0' <<<"$json"
}

_s3_aws() { # ENDPOINT ARGS...
        local endpoint=$1 cli=${AWS_CLI:-/usr/bin/aws}
        shift
        [[ -x $cli ]] || _s3_die "$cli is missing (Debian's awscli): run scripts/setup"
        [[ ${1-} == s3 || ${1-} == s3api ]] || set -- s3 "$@"
        mkdir -p "$s3_dir/aws"
        [[ -f $s3_dir/aws/config ]] || printf '[default]\nregion = us-east-1\n' >"$s3_dir/aws/config"
        AWS_CONFIG_FILE=$s3_dir/aws/config AWS_SHARED_CREDENTIALS_FILE=$s3_dir/aws/credentials \
                AWS_EC2_METADATA_DISABLED=true AWS_PAGER='' \
                AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-S3RVER} \
                AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-S3RVER} \
                AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 \
                "$cli" --endpoint-url "$endpoint" --no-cli-pager "$@"
}

aws_s3() {
        [[ -n ${S3_PORT-} ]] || _s3_die "s3rver is not running (s3_start)"
        _s3_aws "http://127.0.0.1:$S3_PORT" "$@"
}

aws_proxy() {
        [[ -n ${PROXY_PORT-} ]] || _s3_die "the proxy is not running (s3_start)"
        _s3_aws "http://127.0.0.1:$PROXY_PORT" "$@"
}
