# Shared by the tests and benchmarks that deploy instances: a free range of
# host ports, the QEMU processes of a state directory's instances, the
# busybox web kickstart, and the cleanup at exit.

# free_port_base N: a port p such that p..p+N-1 are free on 127.0.0.1
free_port_base() {
        local n=$1 p ok k
        for _ in $(seq 200); do
                p=$((20000 + RANDOM % 30000)) ok=1
                for ((k = 0; k < n; k++)); do
                        (exec 3<>"/dev/tcp/127.0.0.1/$((p + k))") 2>/dev/null && ok=0
                done
                [[ $ok == 1 ]] && { echo "$p"; return 0; }
        done
        echo "no $n free ports in a row" >&2
        return 1
}

# instance_qemus STATE_DIR: the pids of the QEMUs running its instances, sorted
instance_qemus() {
        pgrep -f "$1/instances/" | sort || true
}

# kill_instances STATE_DIR: SIGKILL them all (a test's or benchmark's exit)
kill_instances() {
        local pids
        pids=$(instance_qemus "$1")
        [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true
}

# busybox_web_ks MINIMAL_KS VERSION: a busybox web server kickstart (on
# MINIMAL_KS) whose index page says "version VERSION"
busybox_web_ks() {
        printf '%%include %s\nservices --enabled=httpd,network\n%%post --erroronfail\nmkdir -p /var/www\necho "version %s" > /var/www/index.html\n%%end\n' \
                "$1" "$2"
}

# deploy_cleanup STATE_DIR SCRATCH: at exit, stop the poller ($poller, when
# set) and every instance, then remove the scratch directory
deploy_cleanup() {
        [[ -n ${poller:-} ]] && kill "$poller" 2>/dev/null
        kill_instances "$1"
        rm -rf "$2"
}
