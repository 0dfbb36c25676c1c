# Build the real Debian 12 image with kickstart/web-server.ks, boot it, and
# check the kickstart's effects inside the running guest. A test-only
# %post adds a unit that prints what the guest sees to the serial console
# before the ready line; the test reads the serial log.
source "$(dirname "$0")/lib.sh"

ks_data=$(cd "$(dirname "$0")/../data/ks" && pwd)
out=$work/images
mkdir -p "$out"
cat >"$work/web-check.ks" <<KS
%include $data/kickstart/web-server.ks
%include $ks_data/facts-unit.ks

%post --erroronfail
cat >/usr/local/sbin/ingot-facts <<'SH'
#!/bin/bash
# Waits for nginx, then prints facts for the test, one "fact:" per line,
# all in one write so console messages cannot split a line.
for _ in \$(seq 90); do systemctl is-active --quiet nginx ssh && break; sleep 1; done
facts=\$({
echo "fact: user \$(id deploy)"
echo "fact: keyowner \$(stat -c '%U %a' /home/deploy/.ssh/authorized_keys)"
echo "fact: key \$(cut -d' ' -f1,3 /home/deploy/.ssh/authorized_keys)"
echo "fact: hostname \$(hostname)"
echo "fact: timezone \$(readlink /etc/localtime)"
echo "fact: nginx \$(systemctl is-active nginx)"
echo "fact: ssh-enabled \$(systemctl is-enabled ssh)"
echo "fact: page \$(cat /var/www/html/version)"
exec 3<>/dev/tcp/127.0.0.1/80 && printf 'GET / HTTP/1.0\r\nHost: web\r\n\r\n' >&3 && echo "fact: http \$(head -n 1 <&3)"
if touch /ingot-probe 2>/tmp/err; then echo "fact: root-write allowed"; else echo "fact: root-write \$(cat /tmp/err)"; fi
if mount -o remount,rw / 2>/tmp/err; then echo "fact: remount allowed"; else echo "fact: remount refused"; fi
echo "fact: root-source \$(findmnt -no SOURCE /)"
touch /var/lib/ingot-probe && echo "fact: var-write ok"
echo "fact: machine-id \$(cat /etc/machine-id)"
echo "fact: ssh \$(systemctl is-active ssh) \$(ls /etc/ssh/ | grep -c '^ssh_host_') \$(ls /run/ingot/ssh/ | grep -c '_key\$')"
echo "fact: failed-units \$(systemctl list-units --failed --plain --no-legend | awk '{print \$1}' | tr '\\n' ' ')"
if [ -e /usr/share/ingot-test/canary ]; then
        if cat /usr/share/ingot-test/canary >/dev/null 2>/tmp/err; then echo "fact: canary readable"; else echo "fact: canary \$(cat /tmp/err)"; fi
fi
} 2>&1)
printf '\n%s\n' "\$facts" >/dev/ttyS0
SH
chmod 0755 /usr/local/sbin/ingot-facts
%end
KS

start=$SECONDS
expect_exit 0 "$INGOT" build -t debian-12 -k "$work/web-check.ks" --version 1.0.0 -o "$out"
echo "debian build: $((SECONDS - start))s"; cat "$work/err"
img=$out/debian-12-1.0.0.raw
[[ -f $img ]] || fail "no image"
expect_image_matches_plan "$img" -t debian-12 -k "$work/web-check.ks" --version 1.0.0

expect_exit 0 "$INGOT" boot --firmware uefi --timeout 900 --serial-log "$work/serial.log" "$img"
expect_out 'ingot-ready name=debian-12 version=1.0.0'
echo "boot: $(head -n 2 "$work/out")"
tr -d '\r' <"$work/serial.log" >"$work/facts.log"
grep '^fact:' "$work/facts.log" || { tail -n 50 "$work/facts.log"; fail "no facts on the serial console"; }
fact() { grep -Eq "^fact: $1" "$work/facts.log" || fail "inside the guest: expected '$1'"; }
fact 'user uid=[0-9]+\(deploy\) .*groups=.*\(sudo\).*\(www-data\)'
fact 'keyowner deploy 600'
fact 'key ssh-ed25519 deploy@web'
fact 'hostname web'
fact 'timezone .*Etc/UTC'
fact 'nginx active'
fact 'ssh-enabled enabled'
fact 'page debian-12 1\.0\.0 web$'
fact 'http HTTP/1\.1 200 OK'
# sealed: / read-only even for root, state where it may be written, a
# machine-id and SSH host keys made by this boot, nothing failed
fact 'root-write .*Read-only file system'
fact 'remount refused'
fact 'root-source /dev/[sv]da[0-9]'
fact 'var-write ok'
fact 'machine-id [0-9a-f]{32}$'
fact 'ssh active 0 2'
fact 'failed-units $'
expect_out 'ingot-ready name=debian-12 version=1\.0\.0 verity=off'


# The same image sealed with dm-verity: the initrd opens the root through
# it and the ready line says so. A canary file shows what happens to a
# corrupted block.
cat >"$work/verity.ks" <<KS
%include $work/web-check.ks
%post --erroronfail
mkdir -p /usr/share/ingot-test
yes canary | head -c 65536 >/usr/share/ingot-test/canary
%end
KS
vout=$work/verity
mkdir -p "$vout"
start=$SECONDS
expect_exit 0 "$INGOT" build -t debian-12 -k "$work/verity.ks" --version 1.0.0 --verity -o "$vout"
echo "debian --verity build: $((SECONDS - start))s"; grep -E 'verity|disk' "$work/err"
vimg=$vout/debian-12-1.0.0.raw
expect_image_matches_plan "$vimg" -t debian-12 -k "$work/verity.ks" --version 1.0.0 --verity
sfdisk --json "$vimg" >"$work/vtable.json"
jq -e '[.partitiontable.partitions[] | select(.type == "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5")] | length == 1' \
        "$work/vtable.json" >/dev/null || fail "no root-verity partition"
expect_exit 0 "$INGOT" boot --firmware bios --timeout 900 --serial-log "$work/vserial.log" "$vimg"
expect_out 'ingot-ready name=debian-12 version=1\.0\.0 verity=on'
tr -d '\r' <"$work/vserial.log" >"$work/vfacts.log"
vfact() { grep -Eq "^fact: $1" "$work/vfacts.log" || { grep '^fact:' "$work/vfacts.log"; fail "verity guest: expected '$1'"; }; }
vfact 'root-source /dev/mapper/ingot-root'
vfact 'root-write .*Read-only file system'
vfact 'canary readable'
vfact 'nginx active'

# One flipped byte in the canary's first block: the guest gets an I/O
# error reading it (dm-verity), and the rest still boots.
root_start=$(( $(jq '.partitiontable.partitions[] | select(.type == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709") | .start' "$work/vtable.json") * 512 ))
blk=$(debugfs -R 'bmap /usr/share/ingot-test/canary 0' "$vimg?offset=$root_start" 2>/dev/null)
[[ $blk =~ ^[0-9]+$ ]] || fail "cannot find the canary's block: $blk"
bad=$work/verity-bad.raw
cp --sparse=always "$vimg" "$bad"
printf 'w' | dd of="$bad" bs=1 seek=$((root_start + blk * 4096 + 100)) conv=notrunc status=none
expect_exit 0 "$INGOT" boot --firmware bios --timeout 900 --serial-log "$work/vbad.log" "$bad"
grep -Eq '^fact: canary .*Input/output error' "$work/vbad.log" ||
        { grep '^fact:' "$work/vbad.log"; grep -i verity "$work/vbad.log" | tail -5; fail "a corrupted block was read without an error"; }
grep -qi 'verity' "$work/vbad.log" || fail "no dm-verity message in the serial log"
rm -f "$bad"

# Reproducible from a pinned bootstrap: the tree this build bootstrapped,
# as a tarball template, built twice in different directories.
base=$(grep -l 'nginx' "${XDG_CACHE_HOME:-$HOME/.cache}"/ingot/rootfs-*/key | head -n 1)
base=${base%/key}/base.tar
[[ -f $base ]] || fail "no cached Debian bootstrap"
sed -e 's/^Source=mmdebstrap$/Source=tarball/' -e "s|^Suite=.*|Path=$base|" -e '/^Variant=/d' -e '/^Packages=/d' \
        -e '/^Package=/d' "$data/templates/debian-12.conf" >"$work/debian-tarball.conf"
sed '/^%packages/,/^%end/d' "$data/kickstart/web-server.ks" >"$work/web-tarball.ks"
expect_exit 0 "$INGOT" build -t "$work/debian-tarball.conf" -k "$work/web-tarball.ks" --version 1.0.0 -o "$work/t1"
sleep 1
(cd "$work" && expect_exit 0 "$INGOT" build -t "$work/debian-tarball.conf" -k "$work/web-tarball.ks" --version 1.0.0 \
        --check-reproducible -o "$work/t2/elsewhere")
expect_err 'identical'
a=$(sha256sum <"$work"/t1/*.raw)
b=$(sha256sum <"$work"/t2/elsewhere/*.raw)
[[ "$a" == "$b" ]] || fail "two Debian builds from one tarball differ"
echo "debian reproducible: $a"
