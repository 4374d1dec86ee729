#!/usr/bin/env bash
# Builds the gateway with profile-guided optimization: an instrumented release build, a short
# training run of real traffic through it, then the release build that uses the profile. On the
# 2-vCPU VM the PGO binary served 1.23x the plain release build's HTTP/1.1 requests per second
# per core and 1.41x its TLS h2, with 23 % fewer instructions per request (README, Results,
# "Profile-guided build"). About 12 minutes there with a warm cargo registry; run as root on a
# fresh Debian machine, it installs what it needs: `llvm-N` (the `llvm-profdata` of rustc's own
# LLVM major version N), `nginx` (the training's origin), `wrk`, `nghttp2-client` (`h2load`),
# `curl` and `python3`.
#
# Training (about 30 s, loopback only, every load bounded in time or count): one gateway worker
# with a plaintext and a TLS listener in front of a local nginx; kept-alive HTTP/1.1 GETs over
# 32 and over 400 connections, a connection per request, 64 KiB POSTs, HTTPS/1.1 and TLS h2
# with 64 streams per connection, 404s and a route whose only endpoint refuses connections
# (the gateway's own answers).
#
#   scripts/pgo.sh              # -> target/pgo/<host>/release/gateway (and pingora-min)
#   scripts/pgo.sh --check BIN  # only the training, against BIN, no profile (CI, ~30 s)
#   scripts/pgo.sh --help
#
# The profile is written to target/pgo/gateway.profdata. Only the gateway process's own profile
# is merged (build scripts and proc macros are not instrumented: `--target` keeps RUSTFLAGS off
# them).
set -euo pipefail
cd "$(dirname "$0")/.."

check=""
case ${1:-} in
    -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --check)
        check=${2:?pgo.sh: --check needs the gateway binary to train against}
        [[ -x $check ]] || { echo "pgo.sh: no binary $check" >&2; exit 1; }
        ;;
    "") ;;
    *) echo "pgo.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
host=$(rustc -vV | sed -n 's/^host: //p')
[[ -n $llvm && -n $host ]] || { echo "pgo.sh: cannot read rustc's LLVM version and host" >&2; exit 1; }

install() {
    local missing=()
    [[ -n $check ]] || command -v "llvm-profdata-$llvm" >/dev/null 2>&1 || missing+=("llvm-$llvm")
    command -v nginx >/dev/null 2>&1 || missing+=(nginx)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    ((${#missing[@]})) || return 0
    echo "pgo.sh: installing ${missing[*]}" >&2
    [[ $(id -u) -eq 0 ]] || { echo "pgo.sh: need root to apt-get install ${missing[*]}" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
        { echo "pgo.sh: could not install ${missing[*]}; the profile needs llvm-profdata from LLVM $llvm (rustc's)" >&2; exit 1; }
    # nginx's Debian service is not the training's origin.
    systemctl disable --now nginx >/dev/null 2>&1 || true
}
install
profdata=llvm-profdata-$llvm

gen=target/pgo-gen
out=target/pgo
raw=$gen/profraw
rm -rf "$raw"
mkdir -p "$raw" "$out"
raw=$(cd "$raw" && pwd)

if [[ -n $check ]]; then
    bin=$check
else
    echo "pgo.sh: instrumented build ($gen)" >&2
    RUSTFLAGS="-Cprofile-generate=$raw" cargo build --release --locked -p gateway \
        --target "$host" --target-dir "$gen"
    bin=$gen/$host/release/gateway
fi

. scripts/loopback.sh
origin=$(free_port); http=$(free_port); https=$(free_port); admin=$(free_port); closed=$(free_port)

mkdir -p "$dir/nginx"
cat >"$dir/nginx/nginx.conf" <<EOF
worker_processes 1; daemon off; master_process off; pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx; proxy_temp_path $dir/nginx; fastcgi_temp_path $dir/nginx;
  uwsgi_temp_path $dir/nginx; scgi_temp_path $dir/nginx;
  server {
    listen 127.0.0.1:$origin;
    location = /missing { return 404 "not here\n"; }
    location / { default_type application/json; return 200 '{"region":"fra","ok":true}\n'; }
  }
}
EOF
nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" &
pids+=($!)

cat >"$dir/gateway.yaml" <<EOF
listeners:
  - { name: http, bind: "127.0.0.1:$http" }
  - name: https
    bind: "127.0.0.1:$https"
    tls: { certs: [{ cert: "$PWD/config/examples/tls/example.pem", key: "$PWD/config/examples/tls/example.key" }] }
admin: { bind: "127.0.0.1:$admin" }
server: { threads: 1 }
regions:
  fra:
    endpoints: [{ id: fra-1, address: "127.0.0.1:$origin" }]
  down:
    endpoints: [{ id: down-1, address: "127.0.0.1:$closed" }]
routes:
  - { name: down, match: { host: down.test }, regions: [down] }
  - { name: app, regions: [fra] }
EOF
LLVM_PROFILE_FILE="$raw/check-%p.profraw" "$bin" check "$dir/gateway.yaml" >/dev/null
LLVM_PROFILE_FILE="$raw/gateway-%p.profraw" "$bin" run --config "$dir/gateway.yaml" >"$dir/gateway.log" 2>&1 &
gw=$!
pids+=($gw)

deadline=$((SECONDS + 60))
until curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz"; do
    ((SECONDS < deadline)) || { echo "pgo.sh: the instrumented gateway never became ready" >&2; cat "$dir/gateway.log" >&2; exit 1; }
    sleep 0.5
done

echo "pgo.sh: training" >&2
url=http://127.0.0.1:$http
wrk -t1 -c32 -d6s -H 'Host: app.test' "$url/bench" >"$dir/wrk1.log"
wrk -t1 -c400 -d3s -H 'Host: app.test' "$url/bench" >"$dir/wrk2.log"
wrk -t1 -c8 -d2s -H 'Host: app.test' -H 'Connection: close' "$url/bench" >"$dir/wrk3.log"
wrk -t1 -c16 -d3s -H 'Host: app.test' "https://127.0.0.1:$https/bench" >"$dir/wrk4.log"
h2load -c4 -m64 -n 60000 "https://127.0.0.1:$https/bench" >"$dir/h2load.log"
head -c 65536 /dev/zero | tr '\0' 'x' >"$dir/body"
for _ in $(seq 1 200); do
    curl -s -o /dev/null -H 'Host: app.test' --data-binary "@$dir/body" "$url/upload"
    curl -s -o /dev/null -H 'Host: app.test' "$url/missing"
    curl -s -o /dev/null -H 'Host: down.test' "$url/"
done
grep -q 'status codes: 60000 2xx' "$dir/h2load.log" ||
    { echo "pgo.sh: the TLS h2 training did not get 60000 answers" >&2; cat "$dir/h2load.log" >&2; exit 1; }
for log in "$dir"/wrk*.log; do
    grep -q 'Requests/sec' "$log" || { echo "pgo.sh: a training load failed" >&2; cat "$log" >&2; exit 1; }
done

# The profile is written as the process exits: a graceful stop, not a kill.
kill -TERM "$gw"
wait "$gw" || true
if [[ -n $check ]]; then
    echo "pgo.sh: the training ran against $check"
    exit 0
fi
shopt -s nullglob
profiles=("$raw"/gateway-*.profraw)
((${#profiles[@]})) || { echo "pgo.sh: the gateway wrote no profile" >&2; exit 1; }
"$profdata" merge -o "$out/gateway.profdata" "${profiles[@]}"

echo "pgo.sh: optimized build ($out)" >&2
RUSTFLAGS="-Cprofile-use=$PWD/$out/gateway.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
    cargo build --release --locked -p gateway --target "$host" --target-dir "$out"
echo "pgo.sh: $out/$host/release/gateway"
