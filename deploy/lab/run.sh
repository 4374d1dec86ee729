#!/usr/bin/env bash
# The anycast lab: network namespaces that this script creates (and deletes on every exit),
# real bird2, the real gateway binary and its bgp agent, and simulated regional apps.
#
#   client 10.0.0.2 ── router (bird2, ECMP: merge paths, L4 hash) ── pop1 10.1.0.2 ┐ both: bird2 +
#                      10.0.0.1 / 10.1.0.1 / 10.2.0.1 / 10.3.0.1 / 10.4.0.1  pop2 10.2.0.2 ┘ agent + gateway,
#                                                    │              │        anycast 192.0.2.10 on lo
#                                         fra apps 10.3.0.2   ber apps 10.4.0.2 (:9001, :9002; control :9900)
#
# Addresses exist only inside the lab's namespaces: every veth is created inside a lab
# namespace with its peer in another (none ever reaches the host's namespace). What it tests
# and measures:
#   1. the anycast address answers from both PoPs;
#   2. draining pop1 withdraws its route: the time from `POST /drain` to the router's FIB
#      holding a single path; requests (each on a new connection, an idempotent GET retried
#      on a new connection) keep being answered, none fails; afterwards all go to pop2;
#   3. a sticky session issued through pop1 stays on its endpoint after the switch to pop2;
#   4. killing region fra's apps fails over to ber in both PoPs, each on its own;
#   5. a hung bird (SIGSTOP in pop2) is noticed by the router after the BGP hold time.
# Needs root and bird2 (deploy/deps.sh installs it); skips with a message otherwise. Uses
# the debug binaries (GATEWAY_BIN, LOADTEST_BIN or $CARGO_TARGET_DIR/debug). Last line:
# "lab: N passed, N failed". LAB_KEEP=1 keeps the work directory (logs) on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ $(id -u) -ne 0 ]]; then
    echo "lab: SKIPPED: needs root to create network namespaces (run as root, as CI does)"
    exit 0
fi
if ! "$here/../deps.sh" >/dev/null 2>&1 || ! command -v bird >/dev/null 2>&1; then
    echo "lab: SKIPPED: bird2 is not installed and cannot be installed (apt-get install bird2)"
    exit 0
fi
bin=${CARGO_TARGET_DIR:-$repo/target}/debug
gateway=${GATEWAY_BIN:-$bin/gateway}
loadtest=${LOADTEST_BIN:-$bin/loadtest}
for b in "$gateway" "$loadtest"; do
    [[ -x $b ]] || { echo "lab: no binary $b (cargo build --workspace --bins)" >&2; exit 1; }
done

HOLD=3           # BGP hold time in the lab (keepalive 1 s)
VIP=192.0.2.10
URL="http://$VIP:8080/hello"
id="gwlab$$"     # unique per run
work=$(mktemp -d "/tmp/gateway-lab.XXXXXX")
namespaces=()
pids=()
agent_pids=()
passed=0
failed=0

log() { echo "lab: $*"; }
ok() { log "ok   $*"; passed=$((passed + 1)); }
bad() { log "FAIL $*"; failed=$((failed + 1)); }
ns() { echo "${id}-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
now() { date +%s.%N; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%d", (b - a) * 1000 }'; }

cleanup() {
    set +e
    # Agents first: on SIGTERM each withdraws through its bird, which must still run.
    for pid in "${agent_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 50); do
        alive=0
        for pid in "${agent_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 50); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null; done
    if [[ ${LAB_KEEP:-0} == 1 || $failed -gt 0 ]]; then
        echo "lab: logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn NAME NS CMD...: starts CMD in namespace NS, logging to $work/NAME.log; records its PID.
spawn() {
    local name=$1 n=$2
    shift 2
    ip netns exec "$(ns "$n")" "$@" >"$work/$name.log" 2>&1 &
    pids+=("$!")
    eval "pid_$name=$!"
}

# wait_for WHAT SECONDS CMD...: polls CMD every 50 ms until it succeeds, bounded.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local deadline=$(($(date +%s) + limit))
    until "$@" >/dev/null 2>&1; do
        if (($(date +%s) > deadline)); then
            log "timed out after ${limit}s waiting for $what"
            return 1
        fi
        sleep 0.05
    done
}

paths() { ip -n "$(ns router)" route show "$VIP" | grep -c "nexthop via" || true; }
single_path_via() { local r; r=$(ip -n "$(ns router)" route show "$VIP"); [[ $r == "$VIP via $1 "* ]]; }
two_paths() { [[ $(paths) == 2 ]]; }
ready() { [[ $(in_ns "$1" curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:9901/readyz") == 200 ]]; }

# --- topology -----------------------------------------------------------------------------
for n in client router pop1 pop2 fra ber; do
    ip netns add "$(ns "$n")"
    namespaces+=("$(ns "$n")")
    in_ns "$n" ip link set lo up
done
# link A B NET: a veth between namespaces A (.1 when A is the router) and B (.2), created
# inside A with its peer moved straight into B.
link() {
    local a=$1 b=$2 net=$3
    ip -n "$(ns "$a")" link add "to-$b" type veth peer name "to-$a" netns "$(ns "$b")"
    ip -n "$(ns "$a")" addr add "$net.1/24" dev "to-$b"
    ip -n "$(ns "$b")" addr add "$net.2/24" dev "to-$a"
    ip -n "$(ns "$a")" link set "to-$b" up
    ip -n "$(ns "$b")" link set "to-$a" up
    ip -n "$(ns "$b")" route add default via "$net.1"
}
link router client 10.0.0
link router pop1 10.1.0
link router pop2 10.2.0
link router fra 10.3.0
link router ber 10.4.0
# sysctl NS KEY VALUE, through /proc (procps may be absent on a fresh machine).
sysctl_ns() { in_ns "$1" sh -c "echo $3 > /proc/sys/${2//.//}"; }
sysctl_ns router net.ipv4.ip_forward 1
sysctl_ns router net.ipv4.fib_multipath_hash_policy 1   # L4: flows spread by ports
for conf in all default to-client to-pop1 to-pop2 to-fra to-ber; do
    # Replies of connections on a just-withdrawn PoP still come from it: no reverse-path drop.
    sysctl_ns router "net.ipv4.conf.$conf.rp_filter" 0
done
for p in pop1 pop2; do
    in_ns "$p" ip addr add "$VIP/32" dev lo   # no dummy interface in this kernel: lo
done

# --- regions -------------------------------------------------------------------------------
spawn fra fra "$loadtest" region --name fra --listen 10.3.0.2:9001 --listen 10.3.0.2:9002 --control 10.3.0.2:9900
spawn ber ber "$loadtest" region --name ber --listen 10.4.0.2:9001 --listen 10.4.0.2:9002 --control 10.4.0.2:9900

# --- router bird ---------------------------------------------------------------------------
mkdir -p "$work/router"
cat >"$work/router/bird.conf" <<EOF
router id 10.0.0.1;
protocol device { scan time 1; }
protocol kernel {
  ipv4 { import none; export filter { if net = $VIP/32 then accept; reject; }; };
  merge paths on;                      # ECMP: both PoPs' routes become one multipath route
}
filter from_pop { if net = $VIP/32 then accept; reject; }
template bgp pop {
  local as 65000;
  hold time $HOLD;
  keepalive time 1;
  error wait time 1, 5;
  graceful restart off;
  ipv4 { import filter from_pop; export none; };
}
protocol bgp pop1 from pop { neighbor 10.1.0.2 as 65010; }
protocol bgp pop2 from pop { neighbor 10.2.0.2 as 65010; }
EOF

# --- PoPs: bird, gateway, agent ------------------------------------------------------------
head -c 48 /dev/urandom | base64 >"$work/sticky-k1.key"   # the same keys in both PoPs
for i in 1 2; do
    p=pop$i
    d="$work/$p"
    mkdir -p "$d"
    sed -e "s#^router id .*#router id 10.$i.0.2;#" \
        -e "s#define ANYCAST = .*#define ANYCAST = $VIP/32;#" \
        -e "s#include \"/run/bird/gateway-anycast.conf\";#include \"$d/anycast.conf\";#" \
        -e "s#local .* as 65010;#local 10.$i.0.2 as 65010;#" \
        -e "s#neighbor .* as 65000;#neighbor 10.$i.0.1 as 65000;#" \
        -e "s#hold time 9;#hold time $HOLD;#" \
        -e "s#keepalive time 3;#keepalive time 1;#" \
        -e "s#^log syslog all;#log stderr all;#" \
        "$here/../bird/fra.conf" >"$d/bird.conf"
    "$gateway" bgp-agent --prefix "$VIP/32" --print-include withdrawn >"$d/anycast.conf"
    bird -p -c "$d/bird.conf"
    cat >"$d/gateway.yaml" <<EOF
listeners:
  - { name: http, bind: "0.0.0.0:8080" }
admin: { bind: "127.0.0.1:9901" }
server: { grace_period: 5s }
regions:
  fra:
    endpoints:
      - { id: fra-1, address: "10.3.0.2:9001" }
      - { id: fra-2, address: "10.3.0.2:9002" }
    probe: { http: { path: /healthz }, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 }
  ber:
    endpoints:
      - { id: ber-1, address: "10.4.0.2:9001" }
      - { id: ber-2, address: "10.4.0.2:9002" }
    probe: { http: { path: /healthz }, interval: 200ms, timeout: 150ms, rise: 2, fall: 2 }
routes:
  - name: app
    match: { host: app.example.com }
    regions: [fra, ber]
    failback: { hold_down: 2s }
    sticky: { cookie: gw_affinity, ttl: 1h, secure: false }
sticky_keys:
  - { id: k1, secret_file: $work/sticky-k1.key }
EOF
    "$gateway" check "$d/gateway.yaml" >/dev/null
    spawn "bird_$p" "$p" bird -f -c "$d/bird.conf" -s "$d/bird.ctl" -P "$d/bird.pid"
    spawn "gateway_$p" "$p" env GATEWAY_LOG=info "$gateway" run --config "$d/gateway.yaml" --upgrade-sock "$d/upgrade.sock"
    spawn "agent_$p" "$p" env GATEWAY_LOG=info "$gateway" bgp-agent --admin 127.0.0.1:9901 \
        --prefix "$VIP/32" --include "$d/anycast.conf" --bird-socket "$d/bird.ctl" --interval 200ms
    agent_pids+=("$!")
done
spawn bird_router router bird -f -c "$work/router/bird.conf" -s "$work/router/bird.ctl" -P "$work/router/bird.pid"

wait_for "pop1 ready" 60 ready pop1
wait_for "pop2 ready" 60 ready pop2
if ! wait_for "two paths to $VIP in the router's FIB" 60 two_paths; then
    ip -n "$(ns router)" route show >&2
    birdc -s "$work/router/bird.ctl" show protocols all >&2 || true
    exit 1
fi
log "topology up: $(ip -n "$(ns router)" route show "$VIP" | tr -s ' \n' ' ')"

# --- 1. both PoPs answer ------------------------------------------------------------------
spread=$(in_ns client python3 "$here/client.py" spread "$URL" 60)
if python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d["failed"] == 0 and d["pops"].get("pop1") and d["pops"].get("pop2") else 1)' "$spread"; then
    ok "the anycast address answers from both PoPs: $spread"
else
    bad "anycast spread: $spread"
fi

# --- 2 + 3. drain pop1: withdrawal time, no failed request, sticky across the switch -------
sticky=$(in_ns client python3 "$here/client.py" sticky "$URL" pop1)
cookie=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("cookie", ""))' "$sticky")
pinned=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("endpoint", ""))' "$sticky")
[[ -n $cookie ]] || bad "no sticky cookie through pop1: $sticky"
spawn loop_drain client python3 "$here/client.py" loop "$URL" "$work/drain.jsonl"
spawn loop_sticky client python3 "$here/client.py" loop "$URL" "$work/sticky.jsonl" "$cookie"
sleep 1
t_drain=$(now)
in_ns pop1 curl -sf -X POST http://127.0.0.1:9901/drain >/dev/null
wait_for "the router's FIB to hold only pop2's path" 30 single_path_via 10.2.0.2 || true
withdraw_ms=$(ms_since "$t_drain")
t_single=$(now)
agent_ms=$(python3 "$here/logtime.py" "$work/agent_pop1.log" "$t_drain" 'bird reconfigured' 'announce=false')
sleep 3
touch "$work/drain.jsonl.stop" "$work/sticky.jsonl.stop"
wait "$pid_loop_drain" "$pid_loop_sticky" || true
if single_path_via 10.2.0.2; then
    ok "drain of pop1 withdrew its route: agent reconfigured bird ${agent_ms:-?} ms and the router's FIB held a single path ${withdraw_ms} ms after POST /drain"
else
    bad "drain of pop1: the router still has $(ip -n "$(ns router)" route show "$VIP")"
fi
report=$(python3 - "$work/drain.jsonl" "$work/sticky.jsonl" "$t_single" "$pinned" <<'EOF'
import json, sys
drain = [json.loads(l) for l in open(sys.argv[1])]
sticky = [json.loads(l) for l in open(sys.argv[2])]
t_single, pinned = float(sys.argv[3]), sys.argv[4]
after = [r for r in drain if r["t"] > t_single + 0.5]
out = {
    "requests": len(drain),
    "failed": sum(not r["ok"] for r in drain),
    "retried": sum(r["tries"] > 1 for r in drain if r["ok"]),
    "after_switch_via_pop1": sum(r.get("pop") == "pop1" for r in after),
    "after_switch": len(after),
    "sticky_requests": len(sticky),
    "sticky_failed": sum(not r["ok"] for r in sticky),
    "sticky_other_endpoint": sum(r.get("endpoint") != pinned for r in sticky if r["ok"]),
    "sticky_via_pop2": sum(r.get("pop") == "pop2" for r in sticky if r["ok"]),
    "sticky_via_pop1": sum(r.get("pop") == "pop1" for r in sticky if r["ok"]),
}
print(json.dumps(out))
EOF
)
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$report" "$1"; }
if [[ $(field failed) == 0 && $(field after_switch) -gt 0 && $(field after_switch_via_pop1) == 0 ]]; then
    ok "traffic continued through pop2: $(field requests) requests, $(field failed) failed, $(field retried) retried on a new connection, $(field after_switch) after the switch all via pop2"
else
    bad "traffic during the drain: $report"
fi
if [[ -n $cookie && $(field sticky_failed) == 0 && $(field sticky_other_endpoint) == 0 && $(field sticky_via_pop2) -gt 0 ]]; then
    ok "sticky session issued by pop1 stayed on $pinned across the PoP switch: $(field sticky_via_pop1) requests via pop1, $(field sticky_via_pop2) via pop2, none elsewhere"
else
    bad "sticky across the PoP switch (pinned $pinned): $report"
fi
in_ns pop1 curl -sf -X POST http://127.0.0.1:9901/undrain >/dev/null
wait_for "pop1's path back in the FIB" 30 two_paths || bad "pop1 not re-announced after undrain"

# --- 4. region fra killed: both PoPs fail over on their own --------------------------------
active_is() { in_ns "$1" curl -s http://127.0.0.1:9901/status | python3 -c 'import json,sys; r=json.load(sys.stdin)["routes"][0]; sys.exit(0 if r["active_regions"] == [sys.argv[1]] else 1)' "$2"; }
spawn loop_kill client python3 "$here/client.py" loop "$URL" "$work/kill.jsonl"
sleep 1
t_kill=$(now)
in_ns fra curl -sf -X POST http://10.3.0.2:9900/fra/refuse >/dev/null
# Poll both PoPs in one loop, so each one's time is its own.
both=0
deadline=$(($(date +%s) + 30))
while ((both < 2 && $(date +%s) <= deadline)); do
    for p in pop1 pop2; do
        var="failover_$p"
        if [[ -z ${!var:-} ]] && active_is "$p" ber; then
            eval "$var=$(ms_since "$t_kill")"
            both=$((both + 1))
        fi
    done
    sleep 0.02
done
sleep 1
spread_kill=$(in_ns client python3 "$here/client.py" spread "$URL" 40)
sleep 2
touch "$work/kill.jsonl.stop"
wait "$pid_loop_kill" || true
switched=$(awk -v a="${failover_pop1:-0}" -v b="${failover_pop2:-0}" 'BEGIN { print (a > b ? a : b) / 1000 + 0.2 }')
kill_report=$(python3 - "$work/kill.jsonl" "$t_kill" "$switched" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
t = float(sys.argv[2]) + float(sys.argv[3])
after = [r for r in rows if r["t"] > t]
print(json.dumps({
    "requests": len(rows), "failed": sum(not r["ok"] for r in rows),
    "retried": sum(r["tries"] > 1 for r in rows if r["ok"]),
    "after_switch": len(after),
    "late_fra": sum(r.get("region") == "fra" for r in after),
    "late_pops": sorted({r.get("pop") for r in after if r["ok"]}),
}))
EOF
)
kfield() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$kill_report" "$1"; }
if ((both == 2)) && [[ $(kfield failed) == 0 && $(kfield late_fra) == 0 && $(kfield after_switch) -gt 0 ]] &&
    python3 -c 'import json,sys; k=json.loads(sys.argv[2]); sys.exit(0 if len(k["late_pops"]) == 2 else 1)' "" "$kill_report" &&
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d["failed"] == 0 and len(d["pops"]) == 2 and list(d["regions"]) == ["ber"] else 1)' "$spread_kill"; then
    ok "fra killed: /status of pop1 showed ber after ${failover_pop1:-?} ms, pop2 after ${failover_pop2:-?} ms (each by its own probes); $(kfield requests) requests, $(kfield failed) failed, $(kfield retried) retried, the $(kfield after_switch) after both switched all from ber via $(kfield late_pops); both PoPs answer from ber: $spread_kill"
else
    bad "fra killed: both=$both report=$kill_report spread=$spread_kill"
fi
in_ns fra curl -sf -X POST http://10.3.0.2:9900/fra/ok >/dev/null
for p in pop1 pop2; do
    # The time of the switch as the gateway logged it (the /status polls above only bound it).
    logged=$(python3 "$here/logtime.py" "$work/gateway_$p.log" "$t_kill" 'route switched regions' 'kind="failover"' '["ber"]')
    eval "logged_$p=${logged:-null}"
done
log "fra killed: the gateways logged their switch to ber ${logged_pop1} ms (pop1) and ${logged_pop2} ms (pop2) after the kill"

# --- 5. a hung bird is noticed after the hold time -----------------------------------------
t_stop=$(now)
kill -STOP "$pid_bird_pop2"
dropped=0
wait_for "the router to drop pop2 (hold time ${HOLD}s)" $((HOLD + 15)) single_path_via 10.1.0.2 && dropped=1
hung_ms=$(ms_since "$t_stop")
kill -CONT "$pid_bird_pop2"
# The router's hold timer restarts at pop2's last keepalive (at most 1 s before the stop).
if ((dropped && hung_ms <= HOLD * 1000 + 2000 && hung_ms >= (HOLD - 1) * 1000 - 500)); then
    ok "SIGSTOPped bird in pop2 noticed by the router after ${hung_ms} ms (hold time ${HOLD} s, keepalive 1 s)"
else
    bad "hung bird: ${hung_ms} ms, FIB: $(ip -n "$(ns router)" route show "$VIP")"
fi
wait_for "pop2 back after SIGCONT" 30 two_paths || bad "pop2 did not come back after SIGCONT"

cat >"$work/summary.json" <<EOF
{"withdraw_ms": $withdraw_ms, "agent_reconfigured_ms": ${agent_ms:-null}, "drain": $report, "kill": $kill_report, "failover_status_pop1_ms": ${failover_pop1:-null}, "failover_status_pop2_ms": ${failover_pop2:-null}, "failover_logged_pop1_ms": ${logged_pop1:-null}, "failover_logged_pop2_ms": ${logged_pop2:-null}, "hung_bird_ms": $hung_ms, "hold_s": $HOLD}
EOF
log "summary: $(cat "$work/summary.json")"
if [[ -n ${LAB_REPORT:-} ]]; then cp "$work/summary.json" "$LAB_REPORT"; fi
echo "lab: $passed passed, $failed failed"
((failed == 0))
