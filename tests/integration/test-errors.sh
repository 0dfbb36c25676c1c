# Malformed kickstarts and templates through the installed ingot: each is one
# "file:line: message" on stderr and exit code 2, and nothing on stdout.
source "$(dirname "$0")/lib.sh"

tmpl=$data/templates/busybox.conf
build() { expect_exit 2 "$INGOT" build --dry-run --version 1.0.0 "$@"; }

check_ks() { # name, expected line, message regex; the kickstart is $work/NAME.ks
        build -t "$tmpl" -k "$work/$1.ks"
        expect_one_error_line
        expect_err "^$work/[a-z0-9-]+\.ks:$2: $3"
        [[ ! -s $work/out ]] || fail "$1: a plan was printed for bad input"
}

printf 'rootpw --lock\nuser --name "ops\n' >"$work/unterminated.ks"
check_ks unterminated 2 'unterminated'
printf 'part / --size=64 --frobnicate\n' >"$work/unknown-option.ks"
check_ks unknown-option 1 "unknown option '--frobnicate' for 'part'"
printf 'rootpw --lock\n%%packages\nnginx\n' >"$work/no-end.ks"
check_ks no-end 2 "missing %end"
printf 'rootpw --lock\n%%include b.ks\n' >"$work/a.ks"
printf '%%include a.ks\n' >"$work/b.ks"
build -t "$tmpl" -k "$work/a.ks"
expect_one_error_line
expect_err "^$work/b\.ks:1: include cycle"
{ printf 'rootpw --lock\nlang '; head -c 1048576 /dev/zero | tr '\0' x; printf '\n'; } >"$work/long.ks"
check_ks long 2 'line too long'
printf 'rootpw --lock\n\x00\x01\xff\xfe garbage\n' >"$work/binary.ks"
check_ks binary 2 'binary data'
: >"$work/empty.ks"
build -t "$tmpl" -k "$work/empty.ks"
expect_one_error_line
expect_err "^$work/empty\.ks(:1)?: empty kickstart"
printf 'rootpw --lock\nurl --url http://example.org/\n' >"$work/unsupported.ks"
check_ks unsupported 2 "unsupported kickstart command 'url'"
printf '%%pre\necho hi\n%%end\n' >"$work/pre.ks"
check_ks pre 1 "'%pre' is not supported"
printf 'timezone UTC\nlang C\ntimezone Etc/UTC\n' >"$work/duplicate.ks"
check_ks duplicate 3 "duplicate 'timezone' command \(first at $work/duplicate\.ks:1\)"
printf 'part / --size=64\npart / --size=32\n' >"$work/duplicate-part.ks"
check_ks duplicate-part 2 "duplicate partition for '/'"

# a harmless command is a warning, and the plan is still printed
printf 'rootpw --lock\nreboot\n' >"$work/reboot.ks"
expect_exit 0 "$INGOT" build --dry-run --version 1.0.0 -t "$tmpl" -k "$work/reboot.ks"
expect_err "^$work/reboot\.ks:2: warning: ignoring 'reboot'"
expect_out '^image +busybox 1\.0\.0'

check_tmpl() { # name, line, message regex; the template is $work/NAME.conf
        build -t "$work/$1.conf"
        expect_one_error_line
        expect_err "^$work/$1\.conf:$2: $3"
        [[ ! -s $work/out ]] || fail "$1: a plan was printed for bad input"
}
printf '[Image]\nName=t\nColour=blue\n' >"$work/unknown-key.conf"
check_tmpl unknown-key 3 "unknown key 'Colour' in section \[Image\]"
printf '[Image\nName=t\n' >"$work/header.conf"
check_tmpl header 1 'unterminated section header'
printf '[Image]\nName=t\n[Rootfs]\nSource=busybox\n[Disk]\nSize=12Q\n' >"$work/size.conf"
check_tmpl size 6 "invalid Size= '12Q'"
{ printf '[Image]\nDescription='; head -c 100000 /dev/zero | tr '\0' x; printf '\n'; } >"$work/long.conf"
check_tmpl long 2 'line too long'
printf '[Image]\n\x00\x7f\xff\n' >"$work/binary.conf"
check_tmpl binary 2 'binary data'
: >"$work/empty.conf"
build -t "$work/empty.conf"
expect_one_error_line
expect_err "^$work/empty\.conf: "

# the build owns the root: no root=, init= or verity option from a kickstart
printf 'rootpw --lock\nbootloader --append="console=ttyS0 root=/dev/sda1 init=/bin/sh"\n' >"$work/append-root.ks"
check_ks append-root 2 "'bootloader --append' must not set 'root=/dev/sda1'"
printf 'rootpw --lock\nbootloader --append="init=/bin/sh"\n' >"$work/append-init.ks"
check_ks append-init 2 "'bootloader --append' must not set 'init=/bin/sh'"
printf 'rootpw --lock\nbootloader --append="rw"\n' >"$work/append-rw.ks"
check_ks append-rw 2 "'bootloader --append' must not set 'rw'"

# versions that are no store key component: ".", "..", a leading '-' or '.'
for v in . .. -x .hidden; do
        expect_exit 2 "$INGOT" build --dry-run -t "$tmpl" --version="$v"
        expect_err "invalid version"
done

# a deployment file that is not there is bad input (exit 2), like a bad one
expect_exit 2 "$INGOT" deploy "$work/nonexistent.deploy" --state-dir "$work/state"
expect_err "cannot read deployment file"

# the rest of what the build owns on the command line, each with its reason
for w in rootflags=data=journal rootfstype=ext2 roothash=00ff systemd.verity=0 systemd.verity_root_data=/dev/sda2 \
        ingot.verity.roothash=00ff rd.systemd.verity=1 ro; do
        printf 'rootpw --lock\nbootloader --append="console=ttyS0 %s"\n' "$w" >"$work/append-word.ks"
        check_ks append-word 2 "'bootloader --append' must not set '$w': "
done
# rdinit= (the initrd's init, which opens the verified root) is refused
# where the command line is assembled
printf 'rootpw --lock\nbootloader --append="quiet rdinit=/bin/sh"\n' >"$work/append-rdinit.ks"
build -t "$tmpl" -k "$work/append-rdinit.ks"
expect_one_error_line
expect_err "^$work/append-rdinit\.ks: 'bootloader --append' must not set 'rdinit=/bin/sh': the build sets how the root is found, mounted and verified"
# words that only start like them are the kickstart's to set
printf 'rootpw --lock\nbootloader --append="console=ttyS0 rootwait initrd=x rootdelay=2 quiet"\n' >"$work/append-ok.ks"
expect_exit 0 "$INGOT" build --dry-run --version 1.0.0 -t "$tmpl" -k "$work/append-ok.ks"
expect_out 'rootwait initrd=x rootdelay=2 quiet'

# a version is at most 64 characters; the template's Name= follows the same rule
expect_exit 0 "$INGOT" build --dry-run -t "$tmpl" --version="1.$(printf '%062d' 0)"
expect_exit 2 "$INGOT" build --dry-run -t "$tmpl" --version="1.$(printf '%063d' 0)"
expect_err "invalid version '1\.0+': use at most 64 "
sed 's/^Name=.*/Name=-busybox/' "$tmpl" >"$work/dash-name.conf"
check_tmpl dash-name "$(grep -n '^Name=' "$tmpl" | cut -d: -f1)" "invalid Name= '-busybox': .*starting with a letter or digit"
