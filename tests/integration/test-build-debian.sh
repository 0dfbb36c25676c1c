# Build the real Debian 12 image with kickstart/web-server.ks, boot it, and
# check the kickstart's effects inside the running guest. A test-only
# %post adds a unit that prints what the guest sees to the serial console
# before the ready line; the test reads the serial log.
source "$(dirname "$0")/lib.sh"

out=$work/images
mkdir -p "$out"
cat >"$work/web-check.ks" <<KS
%include $data/kickstart/web-server.ks

%post --erroronfail
cat >/usr/local/sbin/ingot-facts <<'SH'
#!/bin/bash
# Waits for nginx, then prints facts for the test, one "fact:" per line,
# all in one write so console messages cannot split a line.
for _ in \$(seq 60); do systemctl is-active --quiet nginx && break; sleep 1; done
facts=\$({
echo "fact: user \$(id deploy)"
echo "fact: keyowner \$(stat -c '%U %a' /home/deploy/.ssh/authorized_keys)"
echo "fact: key \$(cut -d' ' -f1,3 /home/deploy/.ssh/authorized_keys)"
echo "fact: hostname \$(hostname)"
echo "fact: timezone \$(readlink /etc/localtime)"
echo "fact: nginx \$(systemctl is-active nginx)"
echo "fact: ssh-enabled \$(systemctl is-enabled ssh)"
echo "fact: post \$(grep -c 'served by an ingot image' /var/www/html/index.html)"
exec 3<>/dev/tcp/127.0.0.1/80 && printf 'GET / HTTP/1.0\r\nHost: web\r\n\r\n' >&3 && echo "fact: http \$(head -n 1 <&3)"
} 2>&1)
printf '\n%s\n' "\$facts" >/dev/ttyS0
SH
chmod 0755 /usr/local/sbin/ingot-facts
cat >/etc/systemd/system/ingot-facts.service <<'UNIT'
[Unit]
Description=print facts for the ingot test
After=nginx.service
Before=ingot-ready.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ingot-facts
[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/ingot-facts.service /etc/systemd/system/multi-user.target.wants/ingot-facts.service
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
grep '^fact:' "$work/serial.log" || { tail -n 50 "$work/serial.log"; fail "no facts on the serial console"; }
fact() { grep -Eq "^fact: $1" "$work/serial.log" || fail "inside the guest: expected '$1'"; }
fact 'user uid=[0-9]+\(deploy\) .*groups=.*\(sudo\).*\(www-data\)'
fact 'keyowner deploy 600'
fact 'key ssh-ed25519 deploy@web'
fact 'hostname web'
fact 'timezone .*Etc/UTC'
fact 'nginx active'
fact 'ssh-enabled enabled'
fact 'post 1'
fact 'http HTTP/1\.1 200 OK'
