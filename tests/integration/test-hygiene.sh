# The hygiene gate both ways: a freshly built busybox image passes
# `ingot verify --hygiene`, though its %post left SSH private keys and a
# NetworkManager connection (sysprep removes them by the rules the gate
# checks; the authorized_keys the kickstart's sshkey wrote stay); a copy
# with an SSH host key, an initialised machine-id, private keys and a
# NetworkManager connection planted into its root filesystem fails,
# naming each. The planting is debugfs -w on the root partition in place:
# no root, no loop devices, no mounts.
source "$(dirname "$0")/lib.sh"

for tool in debugfs tune2fs dumpe2fs jq; do
        command -v "$tool" >/dev/null || { echo "$tool is missing (scripts/setup installs it)"; exit 77; }
done

out=$work/images
mkdir -p "$out"
# minimal.ks, SSH keys for root and a user, and a %post that leaves what
# a sealed image must not carry.
ks=$work/leftovers.ks
cat "$data/kickstart/minimal.ks" - >"$ks" <<'KS'
user --name alice --shell /bin/sh
sshkey --username root "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMCsl71B1eZnUJaqLZO4SYinZdzQUxVtrSFWVGghWKd/ root@test"
sshkey --username alice "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMCsl71B1eZnUJaqLZO4SYinZdzQUxVtrSFWVGghWKd/ alice@test"

%post --erroronfail
set -e
mkdir -p /root/.ssh /home/alice/.ssh /etc/NetworkManager/system-connections
printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\nroot\n' >/root/.ssh/id_rsa
printf 'ssh-rsa AAAA root@build\n' >/root/.ssh/id_rsa.pub
printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\nalice\n' >/home/alice/.ssh/id_ed25519
printf '[connection]\nuuid=0b6b2c7e-3c1a-4e8f-9d51-6a3f6c2b1e11\n[wifi-security]\npsk=secret\n' \
        >/etc/NetworkManager/system-connections/x.nmconnection
%end
KS
expect_exit 0 "$INGOT" build -t busybox -k "$ks" --version 1.0.0 -o "$out"
img=$out/busybox-1.0.0.raw

# A built image is clean.
expect_exit 0 "$INGOT" verify --hygiene "$img"
expect_out "^$img: hygiene: clean$"

# The root partition's offset, as the image itself says.
expect_exit 0 "$INGOT" inspect --json --no-os "$img"
offset=$(jq -er '[.disk.partitions[] | select(.role == "root")][0].start' "$work/out") ||
        fail "no root partition in '$img'"

# What sysprep removed and what it kept, read back from the image.
ls_p() { debugfs -R "ls -p $1" "$img?offset=$offset" 2>/dev/null | awk -F/ 'NF > 5 { print $6 }'; }
root_ssh=$(ls_p /root/.ssh) alice_ssh=$(ls_p /home/alice/.ssh) nm=$(ls_p /etc/NetworkManager/system-connections)
[[ $(ls_p /etc) == *os-release* ]] || fail "cannot read the image back with debugfs"
grep -qx authorized_keys <<<"$root_ssh" || fail "sysprep removed root's authorized_keys (the kickstart's sshkey)"
grep -qx id_rsa.pub <<<"$root_ssh" || fail "sysprep removed a public key"
grep -qx authorized_keys <<<"$alice_ssh" || fail "sysprep removed alice's authorized_keys"
! grep -qx id_rsa <<<"$root_ssh" || fail "sysprep left /root/.ssh/id_rsa"
! grep -qx id_ed25519 <<<"$alice_ssh" || fail "sysprep left /home/alice/.ssh/id_ed25519"
! grep -qx x.nmconnection <<<"$nm" || fail "sysprep left the NetworkManager connection"

dirty=$work/dirty.raw
cp --sparse=always "$img" "$dirty"
dev="$dirty?offset=$offset"
# A sealed root carries the ext4 read-only feature, and debugfs -w refuses
# such a filesystem: lift it on the copy.
if dumpe2fs -h "$dev" 2>/dev/null | grep -q '^Filesystem features:.*read-only'; then
        tune2fs -O ^read-only "$dev" >/dev/null 2>&1 || fail "cannot clear the read-only feature of '$dev'"
fi
printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\nplanted\n-----END OPENSSH PRIVATE KEY-----\n' >"$work/key"
printf '0123456789abcdef0123456789abcdef\n' >"$work/machine-id"
printf '[connection]\nuuid=0b6b2c7e-3c1a-4e8f-9d51-6a3f6c2b1e11\n' >"$work/nm"
# debugfs exits 0 when a command fails ("mkdir" does when /etc/ssh exists):
# what it did is checked below, by reading it back.
debugfs -w -f - "$dev" >"$work/debugfs.log" 2>&1 <<EOF
mkdir /etc/ssh
cd /etc/ssh
write $work/key ssh_host_ed25519_key
cd /etc
rm machine-id
write $work/machine-id machine-id
cd /root/.ssh
write $work/key id_rsa
cd /home/alice/.ssh
write $work/key id_ed25519
cd /etc/NetworkManager/system-connections
write $work/nm x.nmconnection
EOF
[[ $(debugfs -R 'cat /etc/machine-id' "$dev" 2>/dev/null) == 0123456789abcdef0123456789abcdef ]] ||
        { cat "$work/debugfs.log" >&2; fail "planting the machine-id failed"; }
debugfs -R 'ls -p /etc/ssh' "$dev" 2>/dev/null | grep -q '/ssh_host_ed25519_key/' ||
        { cat "$work/debugfs.log" >&2; fail "planting the SSH host key failed"; }

debugfs -R 'ls -p /etc/NetworkManager/system-connections' "$dev" 2>/dev/null | grep -q '/x.nmconnection/' ||
        { cat "$work/debugfs.log" >&2; fail "planting the NetworkManager connection failed"; }

expect_exit 1 "$INGOT" verify --hygiene "$dirty"
expect_out "^$dirty: leftover: /etc/machine-id \(.*\)$"
expect_out "^$dirty: leftover: /etc/ssh/ssh_host_ed25519_key \(SSH host key\)$"
expect_out "^$dirty: leftover: /root/.ssh/id_rsa \(SSH private key\)$"
expect_out "^$dirty: leftover: /home/alice/.ssh/id_ed25519 \(SSH private key\)$"
expect_out "^$dirty: leftover: /etc/NetworkManager/system-connections/x.nmconnection \(NetworkManager connection\)$"
grep -q 'hygiene: clean' "$work/out" && fail "a dirty image is reported clean"
# nothing else found: not the kept authorized_keys, not the public key
[[ $(grep -c ': leftover: ' "$work/out") -eq 5 ]] || { cat "$work/out" >&2; fail "expected exactly five leftovers"; }

# The same as JSON, sorted by path.
expect_exit 1 "$INGOT" verify --hygiene --json "$dirty"
jq -e '.hygiene == "dirty" and ([.findings[].path] == ["/etc/NetworkManager/system-connections/x.nmconnection",
        "/etc/machine-id", "/etc/ssh/ssh_host_ed25519_key", "/home/alice/.ssh/id_ed25519", "/root/.ssh/id_rsa"])' \
        "$work/out" >/dev/null || { cat "$work/out" >&2; fail "the JSON does not list the five leftovers"; }

# Not an image with a root partition: a clear error, not a finding.
truncate -s 8M "$work/blank.raw"
rc=0
"$INGOT" verify --hygiene "$work/blank.raw" >"$work/out" 2>"$work/err" || rc=$?
[[ $rc -ne 0 ]] || fail "a blank file passes the hygiene gate"
expect_err 'partition table|no root partition'
grep -q 'leftover' "$work/out" && fail "a blank file has leftovers"
echo "hygiene: clean image passes, planted leftovers are named"
