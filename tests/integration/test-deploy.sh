#!/usr/bin/env bash
# ingot deploy end to end on busybox web images under QEMU: a 2-instance
# deployment of 1.0.0 (both healthy, each port answers, own hostnames),
# a re-run that does nothing, a rolling update to 1.0.1 watched by a poller
# that must never see zero answers, a rollback, a broken image whose rollout
# fails and leaves the old instances serving, a deploy SIGKILLed midway and
# finished by the next run, terminate, and bad deployment files. Under TCG
# each boot takes ~15 s.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"

for tool in qemu-system-x86_64 qemu-img mcopy mdir mtype curl pgrep; do
        command -v "$tool" >/dev/null || { echo "skip: '$tool' is not installed"; exit 77; }
done

state=$work/state
store=file://$work/store
export XDG_CACHE_HOME=$work/cache

source "$here/deploylib.sh"
trap 'deploy_cleanup "$state" "$work"' EXIT

D() { "$INGOT" "$@" --store "$store" --state-dir "$state"; }
P() { "$INGOT" "$@" --state-dir "$state"; }
qemus() { instance_qemus "$state"; }
ps_pids() { P ps --json | python3 -c 'import json,sys; print("\n".join(sorted(str(i["pid"]) for i in json.load(sys.stdin))))'; }
answers() { # the versions the deployment's ports answer with
        for k in 0 1 2; do curl -fsS -m 5 --noproxy '*' "http://127.0.0.1:$((base + k))/" 2>/dev/null || true; done
}

img=$work/img
mkdir -p "$img"
for v in 1.0.0 1.0.1; do
        busybox_web_ks "$data/kickstart/minimal.ks" "$v" >"$work/web-$v.ks"
        expect_exit 0 "$INGOT" build -t busybox -k "$work/web-$v.ks" --version "$v" -o "$img"
        expect_exit 0 "$INGOT" push "$img/busybox-$v.raw" --store "$store"
done
cat >"$work/broken.ks" <<EOK
%include $data/kickstart/minimal.ks
services --enabled=httpd,network
%post --erroronfail
sed -i 's/^echo "ingot-ready /echo "not-ready /' /etc/init.d/rcS
%end
EOK
expect_exit 0 "$INGOT" build -t busybox -k "$work/broken.ks" --version 1.0.2 -o "$img"
expect_exit 0 "$INGOT" push "$img/busybox-1.0.2.raw" --store "$store"

base=$(free_port_base 4)
write_deploy() { # IMAGE [BOOT_TIMEOUT]
        cat >"$work/web.deploy" <<EOD
[Deployment]
Name=web
Image=$1
Count=2
Memory=${MEM:-256M}
Ports=80:$base
MaxSurge=1
MaxUnavailable=0
BootTimeout=${2:-240}
[Health]
HTTP=80/
Interval=1
EOD
}

# ---- bad files: nothing started ----
printf '[Deployment]\nName=web\nImage=busybox@1.0.0\nColour=red\n' >"$work/bad1.deploy"
expect_exit 2 D deploy "$work/bad1.deploy"
expect_err 'bad1.deploy:4'
printf '[Deployment]\nName=web\nImage=busybox@1.0.0\nCount=0\n' >"$work/bad2.deploy"
expect_exit 2 D deploy "$work/bad2.deploy"
expect_err 'bad2.deploy:4'
write_deploy busybox@1.0.0
python3 -c "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $base + 1)); s.listen(); time.sleep(60)" & holder=$!
sleep 1
expect_exit 2 D deploy "$work/web.deploy"
expect_err 'in use'
kill $holder; wait $holder 2>/dev/null || true
write_deploy ami-0123456789abcdef0
expect_exit 1 D deploy "$work/web.deploy"
[[ -z $(qemus) ]] || fail "a bad deployment file started a QEMU"
sleep 1

# ---- deploy 1.0.0 ----
write_deploy busybox@1.0.0
t0=$(date +%s)
expect_exit 0 D deploy "$work/web.deploy"
echo "deploy 1.0.0: $(( $(date +%s) - t0 ))s"
expect_exit 0 P ps --json
n=$(python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); print(len([i for i in a if i["version"]=="1.0.0" and i["ports"]]))' "$work/out")
[[ $n == 2 ]] || { cat "$work/out"; fail "ps lists $n instances of 1.0.0"; }
[[ $(answers | sort | uniq -c | awk '{print $1}') == 2 ]] || fail "not both ports answer 1.0.0: $(answers)"
[[ $(answers | sort -u) == "version 1.0.0" ]] || fail "answers: $(answers)"
ids=$(python3 -c 'import json,sys; print(" ".join(i["instance"] for i in json.load(open(sys.argv[1]))))' "$work/out")
for id in $ids; do
        expect_exit 0 P logs "$id"
        grep -q "ingot.hostname=$id" "$work/out" || fail "instance $id has not its own hostname"
done
# -f keeps following a running instance's console
expect_exit 124 timeout 2 "$INGOT" logs -f "$id" --state-dir "$state"
grep -q "ingot-ready name=busybox version=1.0.0" "$work/out" || fail "logs -f printed no ready line"

# ---- nothing changed ----
before=$(qemus)
expect_exit 0 D deploy "$work/web.deploy"
expect_out '^deployment web: up to date \(2 instances of ami-'
[[ $(qemus) == "$before" ]] || fail "an unchanged deploy changed the QEMU processes"

# ---- rolling update to 1.0.1 with a poller ----
poll() { while :; do n=$(answers | grep -c version || true); echo "$n" >>"$work/poll"; sleep 0.5; done; }
: >"$work/poll"
poll & poller=$!
write_deploy busybox@1.0.1
expect_exit 0 D deploy "$work/web.deploy"
kill $poller; wait $poller 2>/dev/null || true; poller=
! grep -qx 0 "$work/poll" || fail "the poller saw zero instances answering during the rollout"
echo "poller: $(wc -l <"$work/poll") polls, min $(sort -n "$work/poll" | head -1) answering"
[[ $(answers | sort -u) == "version 1.0.1" ]] || fail "after the update: $(answers)"

# ---- rollback ----
expect_exit 0 D rollback web
[[ $(answers | sort -u) == "version 1.0.0" ]] || fail "after the rollback: $(answers)"

# ---- a broken image: rollout fails, 1.0.0 keeps serving ----
write_deploy busybox@1.0.2 30
expect_exit 1 D deploy "$work/web.deploy"
expect_err 'did not become healthy'
python3 - "$state/state.db" <<'EOP' || fail "the deployment is not failed"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("select state from deployments where name='web'").fetchone())
assert "failed" in str(c.execute("select * from deployments where name='web'").fetchone())
EOP
expect_exit 0 P ps web
expect_out '^deployment web: failed, image busybox@1\.0\.2 '
[[ $(answers | sort -u) == "version 1.0.0" ]] || fail "after the failed rollout: $(answers)"
[[ $(answers | grep -c version) == 2 ]] || fail "not 2 old instances answer"
[[ "$(qemus)" == "$(ps_pids)" ]] || fail "QEMU processes are not those ps lists"

# ---- SIGKILL midway, rerun completes ----
# (ingot itself in the background, not a shell function: $! must be its pid)
write_deploy busybox@1.0.1
"$INGOT" deploy "$work/web.deploy" --store "$store" --state-dir "$state" >"$work/killed.out" 2>&1 & dp=$!
for _ in $(seq 600); do
        [[ $(qemus | wc -l) -ge 3 ]] && break
        sleep 0.1
done
# one deploy at a time; ps lists without touching what the deploy owns
expect_exit 1 D deploy "$work/web.deploy"
expect_err "another ingot \(pid $dp\) is changing the deployments"
expect_exit 0 P ps
[[ $(grep -c '^i-' "$work/out") == 3 ]] || fail "ps during a deploy does not list 3 instances"
sleep 2
kill -9 $dp; wait $dp 2>/dev/null || true
echo "--- killed run:"; cat "$work/killed.out"
expect_exit 0 D deploy "$work/web.deploy"
[[ $(answers | sort -u) == "version 1.0.1" ]] || fail "after the rerun: $(answers)"
[[ "$(qemus)" == "$(ps_pids)" ]] || { qemus; ps_pids; fail "QEMU processes are not those ps lists"; }
[[ $(qemus | wc -l) == 2 ]] || fail "not 2 QEMU after the rerun"

# ---- deprecated and deregistered images ----
before=$(qemus)
expect_exit 0 "$INGOT" deprecate busybox@1.0.1 --store "$store"
expect_exit 1 D deploy "$work/web.deploy"
expect_err 'is deprecated: pass --allow-deprecated'
expect_exit 0 D deploy "$work/web.deploy" --allow-deprecated
expect_out '^deployment web: up to date'
expect_exit 0 "$INGOT" deregister busybox@1.0.2 --store "$store"
write_deploy busybox@1.0.2
expect_exit 1 D deploy "$work/web.deploy"
expect_err 'is deregistered: refusing to deploy it'
[[ $(qemus) == "$before" ]] || fail "a refused image changed the QEMU processes"

# ---- an instance terminated by hand, and Memory= changed: the next
# deploy replaces the lost one and the one running with the old memory ----
victim=$(P ps --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["instance"])')
expect_exit 0 P terminate "$victim"
expect_out "^terminated $victim"
[[ $(qemus | wc -l) == 1 ]] || fail "terminate of one instance left $(qemus | wc -l) QEMU"
[[ ! -e $state/instances/$victim ]] || fail "terminate left the instance's directory"
other=$(P ps --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["instance"])')
MEM=192M write_deploy busybox@1.0.1
expect_exit 0 D deploy "$work/web.deploy" --allow-deprecated
expect_err "instance $other runs with other Memory=, CPUs= or Ports="
[[ $(answers | grep -c 'version 1.0.1') == 2 ]] || fail "the lost instance was not replaced: $(answers)"
expect_exit 0 P ps --json
python3 - "$work/out" "$other" <<'EOP' || fail "the instances are not 2 new ones with 192 MiB"
import json, sys
a = json.load(open(sys.argv[1]))
assert len(a) == 2 and all(i["instance"] != sys.argv[2] for i in a), a
for i in a:
    assert json.load(open(i["dir"] + "/instance.json"))["memory_mib"] == 192, i
EOP

# ---- terminate ----
expect_exit 0 P terminate --deployment web
[[ -z $(qemus) ]] || fail "terminate left a QEMU"
[[ -z $(ls -A "$state/instances") ]] || fail "terminate left instance directories"
echo "ok"
