# Shared by the tests and benchmarks that deploy instances: a free range of
# host ports, and the QEMU processes of a state directory's instances.

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
