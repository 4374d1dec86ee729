#!/usr/bin/env bash
# Instructions per proxied request under callgrind: exact from run to run, so small per-request
# costs can be compared. Starts a simulated region (`loadtest region`) and the gateway (one
# worker) under valgrind on loopback with the config fragment given (merged into `server:`),
# sends 200 warm-up GETs, zeroes the counters, sends N more over 4 kept-alive connections and
# prints the gateway's instructions per request. Needs release binaries
# (`cargo build --release -p gateway -p loadtest`; TARGET_DIR overrides where they are:
# `TARGET_DIR=target/pgo/x86_64-unknown-linux-gnu` measures `scripts/pgo.sh`'s build);
# CALLGRIND_OUT=FILE keeps the profile. `{dir}` in --server is a scratch directory,
# `{collector}` the port of an OTLP sink that answers every export 200. `--proxy nginx` or
# `--proxy haproxy` measures that peer instead, with the config `loadtest bench` gives it (one
# worker, the gateway's header work, access log off; `loadtest peer-config`), in the same
# harness: the ratios in the README come from here. `--proxy pingora` measures `pingora-min`
# (built with the gateway: the vendored Pingora with the bench's header work and nothing else),
# the floor of the gateway's request path. `--h2` measures the gateway over TLS h2
# instead: its listener takes `config/examples/tls/example.pem` (ECDSA P-256), `h2load` (Debian's
# nghttp2-client, installed when missing) sends 400 warm-up requests on one connection, then N
# on a new one (`-m 16` streams); the new connection's handshake is in the count (about a
# million instructions: ~500 per request at N 2000). The upstream stays HTTP/1.1.
#
#   scripts/callgrind.sh [--requests N] [--h2] [--server 'start_traces: false'] [--header 'traceparent: ...']
#   scripts/callgrind.sh --proxy nginx|haproxy|pingora [--requests N]
set -euo pipefail
cd "$(dirname "$0")/.."

requests=2000
server=""
header=""
proxy=gateway
h2=false
while (($#)); do
    case "$1" in
        --h2) h2=true; shift ;;
        --requests) requests=$2; shift 2 ;;
        --proxy) proxy=$2; shift 2 ;;
        --server) server=$2; shift 2 ;;
        --header) header=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "callgrind.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

bin=${TARGET_DIR:-target}/release
# `scripts/pgo.sh` builds the gateway only: the plain release `loadtest` serves then.
loadtest=$bin/loadtest
[[ -x $loadtest ]] || loadtest=target/release/loadtest
for b in "$bin/gateway" "$loadtest"; do
    [[ -x $b ]] || { echo "callgrind.sh: no $b (build with --release)" >&2; exit 1; }
done

. scripts/loopback.sh
app=$(free_port); listen=$(free_port); admin=$(free_port); collector=$(free_port)

"$loadtest" region --name fra --listen "127.0.0.1:$app" >"$dir/region.log" 2>&1 &
pids+=($!)
# A sink for OTLP exports (`--server 'otlp: { endpoint: http://127.0.0.1:{collector}/v1/traces }'`).
python3 - "$collector" >"$dir/collector.log" 2>&1 <<'EOF' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
pids+=($!)

server=${server//\{collector\}/$collector}
server=${server//\{dir\}/$dir}
tls=""
if $h2; then
    [[ $proxy == gateway ]] || { echo "callgrind.sh: --h2 measures the gateway only" >&2; exit 2; }
    if ! command -v h2load >/dev/null; then
        echo "callgrind.sh: installing h2load (nghttp2-client)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
    fi
    tls=", tls: { certs: [{ cert: \"$PWD/config/examples/tls/example.pem\", key: \"$PWD/config/examples/tls/example.key\" }] }"
fi
cat >"$dir/gateway.yaml" <<EOF
listeners:
  - { name: http, bind: "127.0.0.1:$listen"$tls }
admin: { bind: "127.0.0.1:$admin" }
server: { threads: 1${server:+, $server} }
regions:
  fra:
    endpoints: [{ id: fra-1, address: "127.0.0.1:$app" }]
routes:
  - { name: app, regions: [fra] }
EOF

ready="http://127.0.0.1:$admin/readyz"
case $proxy in
    gateway)
        valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
            "$bin/gateway" run --config "$dir/gateway.yaml" >"$dir/gateway.log" 2>&1 &
        ;;
    nginx | haproxy)
        if ! command -v "$proxy" >/dev/null; then
            echo "callgrind.sh: installing $proxy" >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$proxy" >/dev/null
        fi
        cfg=$("$loadtest" peer-config --proxy "$proxy" --dir "$dir" \
            --listen "127.0.0.1:$listen" --upstream "127.0.0.1:$app")
        ready="http://127.0.0.1:$listen/bench"
        if [[ $proxy == nginx ]]; then
            # One process: the worker's loop runs in the process valgrind watches.
            valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
                nginx -p "$dir" -g 'master_process off;' -c "$cfg" >"$dir/gateway.log" 2>&1 &
        else
            valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
                haproxy -db -f "$cfg" >"$dir/gateway.log" 2>&1 &
        fi
        ;;
    pingora)
        [[ -x $bin/pingora-min ]] || { echo "callgrind.sh: no $bin/pingora-min (cargo build --release -p gateway)" >&2; exit 1; }
        ready="http://127.0.0.1:$listen/bench"
        valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
            "$bin/pingora-min" --listen "127.0.0.1:$listen" --upstream "127.0.0.1:$app" \
            --threads 1 >"$dir/gateway.log" 2>&1 &
        ;;
    *) echo "callgrind.sh: --proxy is gateway, nginx, haproxy or pingora, not $proxy" >&2; exit 2 ;;
esac
vg=$!
pids+=($vg)

# Both paths wait for the proxy to answer its readiness URL first.
python3 - "$ready" <<'EOF'
import http.client, sys, time, urllib.parse
ready = urllib.parse.urlsplit(sys.argv[1])
deadline = time.time() + 120
while True:
    try:
        c = http.client.HTTPConnection(ready.hostname, ready.port, timeout=5)
        c.request("GET", ready.path, headers={"host": "app.test"})
        if c.getresponse().status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("callgrind.sh: the proxy never became ready")
    time.sleep(0.5)
EOF

if $h2; then
    h2args=(-c 1 -m 16 "https://127.0.0.1:$listen/bench")
    [[ -n $header ]] && h2args+=(-H "$header")
    h2load -n 400 "${h2args[@]}" >"$dir/h2load-warm.log"
    sleep 1
    callgrind_control --zero "$vg" >/dev/null
    h2load -n "$requests" "${h2args[@]}" >"$dir/h2load.log"
    grep -q "status codes: $requests 2xx" "$dir/h2load.log" ||
        { echo "callgrind.sh: h2load did not get $requests 2xx" >&2; cat "$dir/h2load.log" >&2; exit 1; }
    sleep 1
    callgrind_control --dump "$vg" >/dev/null
else
python3 - "$listen" "$requests" "$header" "$vg" <<'EOF'
import http.client, subprocess, sys, time
listen, n, header, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
headers = {"host": "app.test"}
if header:
    k, v = header.split(":", 1)
    headers[k.strip()] = v.strip()
conns = [http.client.HTTPConnection("127.0.0.1", listen, timeout=30) for _ in range(4)]
def send(count):
    for i in range(count):
        c = conns[i % 4]
        c.request("GET", "/bench", headers=headers)
        r = c.getresponse(); r.read()
        if r.status != 200:
            sys.exit(f"callgrind.sh: status {r.status}")
send(200)
time.sleep(1)
subprocess.run(["callgrind_control", "--zero", pid], check=True, stdout=subprocess.DEVNULL)
send(n)
time.sleep(1)
subprocess.run(["callgrind_control", "--dump", pid], check=True, stdout=subprocess.DEVNULL)
EOF
fi

# The dump after the zero holds the measured requests only.
out=$(ls -t "$dir"/callgrind.out* | grep -v '^$' | head -n 1)
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
[[ -n $total ]] || { echo "callgrind.sh: no totals in $out" >&2; exit 1; }
$h2 && proxy="$proxy (TLS h2)"
echo "$proxy: requests: $requests, instructions: $total, per request: $((total / requests))"
# CALLGRIND_OUT=FILE keeps the profile, for callgrind_annotate --inclusive=yes FILE.
if [[ -n ${CALLGRIND_OUT:-} ]]; then cp "$out" "$CALLGRIND_OUT"; fi
