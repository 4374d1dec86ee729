#!/usr/bin/env bash
# Shows that deploy/validate.sh fails on broken deployment material: each case copies deploy/,
# breaks one thing, runs the validation on the copy and expects it to fail with the named
# message. Then it checks that the untouched copy passes. Last line: "N passed, N failed".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# case NAME EXPECTED-MESSAGE EDIT-COMMAND...: the edit runs inside the copy of deploy/.
case_() {
    local name=$1 expected=$2
    shift 2
    local copy="$work/$name/deploy"
    mkdir -p "$work/$name"
    cp -a "$here" "$copy"
    ln -s "$(cd "$here/.." && pwd)/gateway" "$work/$name/gateway"   # telemetry.rs for the metric check
    (cd "$copy" && "$@")
    if out=$("$here/validate.sh" "$copy" 2>&1); then
        echo "validate_test: FAIL $name: validation passed on a broken copy"
        failed=$((failed + 1))
    elif grep -qF -- "$expected" <<<"$out"; then
        echo "validate_test: ok   $name"
        passed=$((passed + 1))
    else
        echo "validate_test: FAIL $name: failed, but without \`$expected\`:"
        sed 's/^/    /' <<<"$out" | tail -20
        failed=$((failed + 1))
    fi
}

case_ config-subpath "mounted with subPath" \
    sed -i 's#{ name: config, mountPath: /etc/gateway/config, readOnly: true }#{ name: config, mountPath: /etc/gateway/config/gateway.yaml, subPath: gateway.yaml, readOnly: true }#' k8s/base/daemonset.yaml
case_ unknown-field "kubernetes-validate" \
    sed -i 's#^          readinessProbe:#          readinesProbe:#' k8s/base/daemonset.yaml
case_ no-readiness "readinessProbe path is None" \
    sed -i '/^          readinessProbe:/,+4d' k8s/base/daemonset.yaml
case_ other-vip "anycast address: not the same everywhere" \
    sed -i 's#define ANYCAST = 192.0.2.10/32;#define ANYCAST = 192.0.2.11/32;#' bird/ber.conf
case_ same-router-id "router id" \
    sed -i 's#router id 10.255.2.2;#router id 10.255.1.2;#' bird/ber.conf
case_ bird-syntax "bird -p ber.conf" \
    sed -i 's#export filter anycast_out;#export filter anycast_out#' bird/ber.conf
case_ short-grace "terminationGracePeriodSeconds 30 < preStop wait" \
    sed -i 's#terminationGracePeriodSeconds: 45#terminationGracePeriodSeconds: 30#' k8s/base/daemonset.yaml
case_ inlined-secret "secret data inlined" \
    bash -c 'printf "apiVersion: v1\nkind: Secret\nmetadata:\n  name: gateway-secrets\nstringData:\n  admin.token: hunter2hunter2hunter2\n" >k8s/common/secret.yaml && sed -i "s#  - pdb.yaml#  - pdb.yaml\n  - secret.yaml#" k8s/common/kustomization.yaml'
case_ unknown-kind "no built-in schema and none kept" \
    bash -c 'printf "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: gateway\nspec:\n  endpoints: [{ port: admin }]\n" >k8s/variants/deployment/servicemonitor.yaml && sed -i "s#  - cilium-bgp.yaml#  - cilium-bgp.yaml\n  - servicemonitor.yaml#" k8s/variants/deployment/kustomization.yaml'
case_ both-regions-at-once "updates ['ber', 'fra'] together" \
    sed -i '0,/values: \[fra\]/s//values: [fra, ber]/' argocd/applicationset.yaml
case_ gateway-config "unknown field \`colour\`" \
    sed -i 's#^  grace_period: 20s.*#  grace_period: 20s\n  colour: blue#' k8s/common/config/gateway.yaml
case_ unmounted-file "is on no volume mount" \
    sed -i 's#ca_file: ../ca/fra.pem#ca_file: /etc/ssl/fra.pem#' k8s/common/config/gateway.yaml
case_ unknown-metric "metric gateway_region_healthy does not exist" \
    sed -i 's#gateway_region_up == 0 and gateway_region_drained == 0#gateway_region_healthy == 0#' monitoring/alerts.yaml
case_ yaml-duplicate-key "yamllint" \
    sed -i 's#^  name: gateway$#  name: gateway\n  name: gateway2#' k8s/common/serviceaccount.yaml

# The untouched copy passes (the cases above failed for their own reason only).
mkdir -p "$work/clean"
cp -a "$here" "$work/clean/deploy"
ln -s "$(cd "$here/.." && pwd)/gateway" "$work/clean/gateway"
if "$here/validate.sh" "$work/clean/deploy" >"$work/clean.log" 2>&1; then
    echo "validate_test: ok   untouched copy passes"
    passed=$((passed + 1))
else
    echo "validate_test: FAIL untouched copy fails:"
    tail -20 "$work/clean.log"
    failed=$((failed + 1))
fi
echo "validate_test: $passed passed, $failed failed"
((failed == 0))
