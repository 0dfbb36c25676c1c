#!/usr/bin/env bash
# The instance runtime (src/instance.c) against real QEMU, through
# tests/unit/instance-run: two instances of one busybox web image at once
# (own hostnames, both answer HTTP on their forwarded ports, the base image
# unchanged, small overlays), a controller SIGKILLed after the start (QEMU
# keeps running and probe finds it), a graceful stop that leaves no QEMU,
# and an image whose init never prints the ready line (the health wait times
# out with the last serial lines, stop leaves nothing). Under TCG each boot
# takes 10-30 s.
#   INSTANCE_RUN  the instance-run binary (default: beside the build of $INGOT)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
source "$here/deploylib.sh"

for tool in qemu-system-x86_64 qemu-img mcopy mdir mtype curl pgrep; do
        command -v "$tool" >/dev/null || { echo "skip: '$tool' is not installed"; exit 77; }
done
run=${INSTANCE_RUN:-}
if [[ -z $run ]]; then
        # $INGOT is BUILD/inst/bin/ingot (installed) or BUILD/ingot
        for c in "$(dirname "$INGOT")/../../tests/unit/instance-run" "$(dirname "$INGOT")/tests/unit/instance-run"; do
                [[ -x $c ]] && { run=$c; break; }
        done
fi
[[ -n $run && -x $run ]] || fail "instance-run not found (make check builds it; or set INSTANCE_RUN)"

inst=$work/instances
mkdir -p "$inst"
# Every QEMU this test starts runs an overlay under $inst: kill exactly those.
cleanup() {
        local pids
        pids=$(pgrep -f "$inst/" || true)
        [[ -n $pids ]] && kill -9 $pids 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT

# free_port: a loopback TCP port nothing listens on
free_port() {
        local p
        for _ in $(seq 200); do
                p=$((20000 + RANDOM % 30000))
                (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
        fail "no free port"
}
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
no_qemu_of() { ! pgrep -af "$1/" >&2 || fail "a QEMU of '$1' is still running"; }

# The images: a web server (httpd + DHCP, the version in index.html) and one
# whose init never reaches the ready line.
img=$work/img
mkdir -p "$img"
busybox_web_ks "$data/kickstart/minimal.ks" 1.0.0 >"$work/web.ks"
cat >"$work/broken.ks" <<'EOK'
%post --erroronfail
sed -i 's/^echo "ingot-ready /echo "not-ready /' /etc/init.d/rcS
! grep -q 'echo "ingot-ready' /etc/init.d/rcS
%end
EOK
sed -i "1i %include $data/kickstart/minimal.ks" "$work/broken.ks"
expect_exit 0 "$INGOT" build -t busybox -k "$work/web.ks" --version 1.0.0 -o "$img"
expect_exit 0 "$INGOT" build -t busybox -k "$work/broken.ks" --version 0.0.1 -o "$img"
base=$img/busybox-1.0.0.raw
broken=$img/busybox-0.0.1.raw
sum=$(sha256sum <"$base")

# Two instances of one base, each with its own forwarded port.
ida=i-00000000000000a01 idb=i-00000000000000b02
pa=$(free_port) pb=$(free_port)
[[ $pa != "$pb" ]] || pb=$((pa + 1))
t0=$(date +%s.%N)
expect_exit 0 "$run" create "$inst/a" "$base" "$ida" 256 "80:$pa"
t1=$(date +%s.%N)
expect_exit 0 "$run" create "$inst/b" "$base" "$idb" 256 "80:$pb"
echo "create: first $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')s (extracts the boot files), second $(elapsed "$t1")s"
[[ -d $base.boot ]] || fail "no boot-file cache beside the base"
[[ $(stat -c %d:%i "$inst/a/vmlinuz") == $(stat -c %d:%i "$base.boot/vmlinuz") ]] || fail "vmlinuz is not linked from the cache"
qemu-img info "$inst/a/disk.qcow2" | grep -q "^backing file: $base" || fail "the overlay's backing file is not the base"
[[ $(stat -c %a "$inst/a") == 700 ]] || fail "the instance directory is not 0700"

# Instance a is started by a controller that is SIGKILLed right after: QEMU stays.
( "$run" start "$inst/a" && exec "$run" wait "$inst/a" 600 ) >"$work/ctl.out" 2>&1 &
ctl=$!
for _ in $(seq 300); do
        [[ -s $inst/a/qemu.pid ]] && "$run" probe "$inst/a" 2>/dev/null | grep -q '^running' && break
        sleep 0.1
done
{ kill -9 $ctl && wait $ctl; } 2>/dev/null || true
expect_exit 0 "$run" probe "$inst/a"
expect_out '^running [0-9]+$'
pid_a=$(cut -d' ' -f2 "$work/out")
[[ $(cat "$inst/a/qemu.pid") == "$pid_a" ]] || fail "probe's pid is not the pidfile's"
# -daemonize: setsid() in the middle process, so QEMU's session is not ours
[[ $(ps -o sid= -p "$pid_a" | tr -d ' ') != $(ps -o sid= -p $$ | tr -d ' ') ]] || fail "QEMU is in the test's session"

start=$(date +%s.%N)
expect_exit 0 "$run" start "$inst/b"
echo "start b: $(elapsed "$start")s"
expect_exit 1 "$run" start "$inst/b"
expect_err 'running already'

for x in a b; do
        port=$pa id=$ida
        [[ $x == b ]] && port=$pb id=$idb
        expect_exit 0 "$run" wait "$inst/$x" 600 "http:$port/"
        echo "instance $x: $(cat "$work/out")"
        [[ $(curl -fsS --noproxy '*' "http://127.0.0.1:$port/") == "version 1.0.0" ]] || fail "instance $x does not serve 1.0.0"
        grep -q "ingot.hostname=$id" "$inst/$x/serial.log" || fail "instance $x: no hostname on the kernel command line"
        for _ in $(seq 100); do grep -aq "^$id login:" "$inst/$x/serial.log" && break; sleep 0.3; done
        grep -aq "^$id login:" "$inst/$x/serial.log" || { tail "$inst/$x/serial.log"; fail "instance $x does not call itself $id"; }
done
grep -aq "login:" "$inst/a/serial.log" && ! grep -aq "$idb" "$inst/a/serial.log" || fail "instance a saw b's hostname"

# The base is never written; the overlays hold only what the guests wrote.
[[ $(sha256sum <"$base") == "$sum" ]] || fail "running instances changed the base image"
for x in a b; do
        kb=$(du -k "$inst/$x/disk.qcow2" | cut -f1)
        [[ $kb -lt 4096 ]] || fail "overlay of $x is ${kb} KiB"
        echo "overlay $x: ${kb} KiB"
done

for x in a b; do
        expect_exit 1 "$run" remove "$inst/$x"
        expect_err 'still running'
        start=$(date +%s.%N)
        expect_exit 0 "$run" stop "$inst/$x" 15
        echo "stop $x: $(cat "$work/out") in $(elapsed "$start")s"
        no_qemu_of "$inst/$x"
        expect_exit 0 "$run" probe "$inst/$x"
        expect_out '^exited$'
        [[ ! -e $inst/$x/qemu.pid ]] || fail "stop left the pidfile of $x"
        expect_exit 0 "$run" remove "$inst/$x"
        [[ ! -e $inst/$x ]] || fail "remove left '$inst/$x'"
        expect_exit 0 "$run" probe "$inst/$x"
        expect_out '^missing$'
done
[[ $(sha256sum <"$base") == "$sum" ]] || fail "the base image changed"

# An init that never prints the ready line: the wait times out with the
# last serial lines as the reason; stop leaves nothing running.
expect_exit 0 "$run" create "$inst/c" "$broken" i-00000000000000c03 256
expect_exit 0 "$run" start "$inst/c"
expect_exit 1 "$run" wait "$inst/c" 60
expect_err 'no ready line .* within 60 s; last serial lines:'
expect_err 'not-ready name=busybox'
echo "broken image:"; sed 's/^/  /' "$work/err" | tail -n 5
expect_exit 0 "$run" stop "$inst/c" 5
no_qemu_of "$inst/c"
expect_exit 0 "$run" remove "$inst/c"

# A start of a missing instance fails and starts nothing.
expect_exit 1 "$run" start "$inst/nope"
no_qemu_of "$inst"
echo "ok"
