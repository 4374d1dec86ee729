# Sourced by the scripts that start processes on loopback (callgrind.sh, pgo.sh): a scratch
# directory `$dir`, the processes to stop when the script exits (append each PID to `pids`),
# and `free_port`, an ephemeral loopback port nothing listens on.
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
