#!/usr/bin/env bash
# The README's main command, scripts/demo, run as a new user would (own
# store and state), on the Debian 12 web server: build 1.0.0, push, deploy
# 2 instances, build 1.0.1, push, rolling deploy, rollback. Then, on what it
# leaves running: each instance answers with its own version and instance
# id; inside each (a test-only unit prints to the serial console, read with
# `ingot logs`) the hostname is the instance id, the machine-ids differ and
# / is read-only; a poller hitting every port throughout never saw zero
# instances answering once the first was up; the QEMU processes are exactly
# those `ingot ps` lists; terminate leaves no QEMU and no overlay.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
top=$(cd "$here/../.." && pwd)

export XDG_DATA_HOME=$work/data XDG_STATE_HOME=$work/state
state=$XDG_STATE_HOME/ingot
source "$here/deploylib.sh"
trap 'deploy_cleanup "$state" "$work"' EXIT
base=$(free_port_base 3)

cat >"$work/demo.ks" <<KS
%include $top/kickstart/web-server.ks
%include $here/../data/ks/facts-unit.ks

%post --erroronfail
cat >/usr/local/sbin/ingot-facts <<'SH'
#!/bin/bash
facts=\$({
echo "fact: hostname \$(hostname)"
echo "fact: machine-id \$(cat /etc/machine-id)"
if touch /ingot-probe 2>/tmp/err; then echo "fact: root-write allowed"; else echo "fact: root-write \$(cat /tmp/err)"; fi
} 2>&1)
printf '\n%s\n' "\$facts" >/dev/ttyS0
SH
chmod 0755 /usr/local/sbin/ingot-facts
%end
KS

# counts the ports answering, every half second
poll() {
        local n k
        while :; do
                n=0
                for k in 0 1 2; do
                        curl -fsS -m 5 --noproxy '*' "http://127.0.0.1:$((base + k))/version" >/dev/null 2>&1 && n=$((n + 1))
                done
                echo "$n" >>"$work/poll"
                sleep 0.5
        done
}
: >"$work/poll"
poll & poller=$!

start=$SECONDS
rc=0
INGOT_DEMO_KICKSTART=$work/demo.ks INGOT_DEMO_PORT=$base INGOT_DEMO_OUT=$work/images \
        timeout 2400 "$top/scripts/demo" >"$work/demo.out" 2>&1 || rc=$?
kill $poller; wait $poller 2>/dev/null || true; poller=
cat "$work/demo.out"
echo "demo: $((SECONDS - start))s, exit $rc"
[[ $rc == 0 ]] || fail "scripts/demo exited $rc"

# the answers the demo printed after each step: 2 instances, one version
section() { # TITLE: the answer lines under "answers (TITLE):"
        awk -v t="answers ($1):" '$0 == t {on = 1; next} on && /^  http/ {print; next} on {exit}' "$work/demo.out"
}
for step in "1.0.0:1.0.0" "1.0.1:1.0.1" "1.0.0 again:1.0.0"; do
        title=${step%:*} v=${step##*:}
        lines=$(section "$title")
        [[ $(grep -c "→ debian-12 $v i-[0-9a-f]\{17\}$" <<<"$lines") == 2 ]] ||
                fail "after '$title' not 2 instances answered with $v: $lines"
        [[ $(awk '{print $NF}' <<<"$lines" | sort -u | wc -l) == 2 ]] || fail "one instance answered twice: $lines"
done

# the poller: never zero answering once the first deploy's 2 instances
# were up (through the update and the rollback)
awk '$1 >= 2 {armed = 1} armed && $1 == 0 {bad++} END {exit !(armed && !bad)}' "$work/poll" ||
        fail "the poller never saw 2 answers, or zero answers after: $(tr '\n' ' ' <"$work/poll")"
echo "poller: $(wc -l <"$work/poll") polls, once 2 answered min $(awk '$1 >= 2 {a = 1} a' "$work/poll" | sort -n | head -n 1) answering"

# what runs: exactly what ps lists, 2 healthy instances of 1.0.0
expect_exit 0 "$INGOT" ps web --json
cp "$work/out" "$work/ps.json"
jq -e 'length == 2 and all(.[]; .version == "1.0.0" and .state == "healthy")' "$work/ps.json" >/dev/null ||
        fail "ps: $(cat "$work/ps.json")"
[[ "$(instance_qemus "$state")" == "$(jq -r '.[].pid' "$work/ps.json" | sort)" ]] ||
        fail "the QEMU processes running are not those ps lists"

# inside each instance
ids=$(jq -r '.[].instance' "$work/ps.json")
mids=()
for id in $ids; do
        expect_exit 0 "$INGOT" logs "$id"
        tr -d '\r' <"$work/out" >"$work/facts-$id"
        grep -qx "fact: hostname $id" "$work/facts-$id" || fail "instance $id: hostname is not its id: $(grep '^fact:' "$work/facts-$id")"
        grep -q "^fact: root-write .*Read-only file system" "$work/facts-$id" || fail "instance $id: / is writable"
        mids+=("$(sed -n 's/^fact: machine-id \([0-9a-f]\{32\}\)$/\1/p' "$work/facts-$id")")
done
[[ -n ${mids[0]} && -n ${mids[1]} && ${mids[0]} != "${mids[1]}" ]] || fail "machine-ids: '${mids[*]}'"

# terminate: nothing left
expect_exit 0 "$INGOT" terminate --deployment web
[[ -z $(instance_qemus "$state") ]] || fail "terminate left a QEMU"
[[ -z $(ls -A "$state/instances") ]] || fail "terminate left instance directories: $(ls "$state/instances")"
echo ok
