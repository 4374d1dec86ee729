#!/usr/bin/env bash
# Installs what deploy/validate.sh and the anycast lab (deploy/lab/) need on a fresh Debian
# machine (run as root): yamllint, kubectl (Debian's kubernetes-client), bird2, iproute2,
# openssl, and a Python venv in /opt/gateway-deploy-venv with kubernetes-validate and
# check-jsonschema (pinned). Does nothing when everything is already there.
set -euo pipefail

VENV=${GATEWAY_DEPLOY_VENV:-/opt/gateway-deploy-venv}
PY_PACKAGES=(kubernetes-validate==1.34.1 check-jsonschema==0.33.3)

missing=()
command -v yamllint >/dev/null 2>&1 || missing+=(yamllint)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v bird >/dev/null 2>&1 || missing+=(bird2)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)

if ((${#missing[@]})); then
    echo "deploy deps: installing ${missing[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "deploy deps: need root to apt-get install ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The bird2 package starts a system bird on install; the lab runs its own, in namespaces.
    if [[ " ${missing[*]} " == *" bird2 "* ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now bird >/dev/null 2>&1 || true
    fi
fi

if ! "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1 ||
    ! "$VENV/bin/check-jsonschema" --version >/dev/null 2>&1; then
    echo "deploy deps: creating $VENV with ${PY_PACKAGES[*]}" >&2
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
