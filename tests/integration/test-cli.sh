# The command line: help, version, verbs, usage errors and their exit codes.
source "$(dirname "$0")/lib.sh"
cd "$work"

expect_exit 0 "$INGOT" --help
expect_out '^usage: ingot'
expect_out 'build'
expect_exit 0 "$INGOT" --version
expect_out '^ingot [0-9]+\.[0-9]+\.[0-9]+$'
expect_exit 0 "$INGOT" help build
expect_out '^usage: ingot build'
expect_exit 0 "$INGOT" build --help
expect_out '--dry-run'
expect_exit 0 "$INGOT" -q build -h
expect_out '^usage: ingot build'

# no verb: the help, but as a usage error
expect_exit 2 "$INGOT"
expect_out '^usage: ingot'

expect_exit 2 "$INGOT" biuld
expect_err "^ingot: unknown verb 'biuld'$"
expect_err "^hint: did you mean 'ingot build'\?"
expect_exit 2 "$INGOT" frobnicate
expect_err "^hint: see 'ingot --help'"
expect_exit 2 "$INGOT" help frobnicate
expect_err "unknown verb 'frobnicate'"
expect_exit 2 "$INGOT" --frobnicate
expect_err "^ingot: unknown option '--frobnicate'$"

expect_exit 2 "$INGOT" build --frobnicate -t busybox --dry-run
expect_err "^ingot build: unknown option '--frobnicate'$"
expect_err "^hint: see 'ingot build --help'$"
expect_exit 2 "$INGOT" build -t
expect_err "needs a value"
expect_exit 2 "$INGOT" build --dry-run
expect_err "no template"
expect_exit 2 "$INGOT" build -t busybox --dry-run extra
expect_err "too many arguments"
expect_exit 2 "$INGOT" build -t no-such-template --version 1 --dry-run
expect_err "no template 'no-such-template'"
expect_exit 2 "$INGOT" build -t "$work/missing.conf" --version 1 --dry-run
expect_one_error_line
expect_exit 2 "$INGOT" build -t busybox --version 'Bad Version' --dry-run
expect_err "invalid version 'Bad Version'"
expect_exit 2 "$INGOT" build -t busybox --version 1.0.0 --format vmdk --dry-run
expect_err "unknown --format 'vmdk'"
SOURCE_DATE_EPOCH=yesterday expect_exit 2 "$INGOT" build -t busybox --version 1.0.0 --dry-run
expect_err "invalid SOURCE_DATE_EPOCH"

# global options work after the verb too
expect_exit 0 "$INGOT" build -t busybox --version 1.0.0 --dry-run --json -q
jq -e '.name == "busybox"' "$work/out" >/dev/null || fail "--json after the verb"
