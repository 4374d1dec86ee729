#!/usr/bin/env bash
# Validates deploy/ offline (no cluster, no network): yamllint; `kubectl kustomize` of every
# overlay and variant; kubernetes-validate --strict on the rendered built-in kinds and
# check-jsonschema with the schemas kept in deploy/schemas on the others (a kind with neither
# fails); `bird -p` on every bird config with the agent's include in both states; `gateway
# check` on every gateway config, laid out as the pod mounts it; and the invariants a reviewer
# would check by hand (deploy/tools/deploy_check.py). Usage: deploy/validate.sh [DEPLOY_DIR]
# (another copy of deploy/, for the test that breaks one: deploy/validate_test.sh).
# Needs deploy/deps.sh (called here) and a built gateway binary (GATEWAY_BIN, default
# $CARGO_TARGET_DIR/debug/gateway or target/debug/gateway).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
deploy=$(cd "${1:-$here}" && pwd)

"$here/deps.sh"
venv=${GATEWAY_DEPLOY_VENV:-/opt/gateway-deploy-venv}
py="$venv/bin/python"
gateway=${GATEWAY_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/gateway}
[[ -x $gateway ]] || { echo "validate: no gateway binary at $gateway (cargo build -p gateway)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
step() { echo "validate: $*"; }
bad() { echo "validate: FAILED: $*" >&2; failed=1; }

step "yamllint"
mapfile -t yamls < <(find "$deploy" -name '*.yaml' -not -path '*/lab/run/*' | sort)
yamllint -s -c "$here/.yamllint" "${yamls[@]}" || bad "yamllint"

rendered=()
for dir in "$deploy"/k8s/overlays/* "$deploy"/k8s/variants/*; do
    name=$(basename "$(dirname "$dir")")-$(basename "$dir")
    out="$work/$name.yaml"
    step "kubectl kustomize ${dir#"$deploy"/}"
    if ! kubectl kustomize "$dir" >"$out" 2>"$work/kustomize.err"; then
        cat "$work/kustomize.err" >&2
        bad "kustomize $dir"
        continue
    fi
    rendered+=("$out")
    "$py" "$here/tools/deploy_check.py" split "$out" "$work/$name" || bad "kinds in $name"
    if [[ -d $work/$name/builtin ]]; then
        step "kubernetes-validate --strict ($name: $(ls "$work/$name/builtin" | wc -l) objects)"
        "$venv/bin/kubernetes-validate" --strict --quiet "$work/$name"/builtin/*.yaml || bad "kubernetes-validate $name"
    fi
    for schema_dir in "$work/$name"/crd/*; do
        [[ -d $schema_dir ]] || continue
        schema=$(basename "$schema_dir")
        step "check-jsonschema $schema ($name)"
        "$venv/bin/check-jsonschema" --schemafile "$deploy/schemas/$schema" "$schema_dir"/*.yaml || bad "check-jsonschema $name $schema"
    done
    step "gateway check ($name, staged as the pod mounts it)"
    if staged=$("$py" "$here/tools/deploy_check.py" stage "$out" "$work/stage-$name"); then
        for config in $staged; do
            "$gateway" check "$config" || bad "gateway check $name: $config"
        done
    else
        bad "staging $name"
    fi
done

step "check-jsonschema (Argo CD, alert rules)"
"$venv/bin/check-jsonschema" --schemafile "$deploy/schemas/applicationset-argoproj.io-v1alpha1.json" "$deploy/argocd/applicationset.yaml" || bad "ApplicationSet schema"
"$venv/bin/check-jsonschema" --schemafile "$deploy/schemas/prometheus-rules.json" "$deploy/monitoring/alerts.yaml" || bad "alert rules schema"

for conf in "$deploy"/bird/*.conf; do
    prefix=$(sed -nE 's/^define ANYCAST = ([^;]+);.*/\1/p' "$conf")
    for state in announced withdrawn; do
        step "bird -p $(basename "$conf") (include $state)"
        "$gateway" bgp-agent --prefix "$prefix" --print-include "$state" >"$work/include.conf"
        sed "s#\"/run/bird/gateway-anycast.conf\"#\"$work/include.conf\"#" "$conf" >"$work/bird.conf"
        grep -q "$work/include.conf" "$work/bird.conf" || bad "$conf does not include /run/bird/gateway-anycast.conf"
        bird -p -c "$work/bird.conf" || bad "bird -p $conf ($state)"
    done
done

step "invariants"
"$py" "$here/tools/deploy_check.py" invariants "$deploy" "${rendered[@]}" || bad "invariants"

if ((failed)); then
    echo "validate: deploy/ is NOT valid" >&2
    exit 1
fi
echo "validate: deploy/ ok (${#rendered[@]} renderings, $(ls "$deploy"/bird/*.conf | wc -l) bird configs)"
