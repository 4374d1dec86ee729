#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine (run as root): cmake for
# Pingora's zlib-ng; headless Chromium and its WebDriver for the status page's browser test.
# Does nothing when everything is already there.
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if ((${#missing[@]})); then
    echo "deps: installing ${missing[*]}" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "deps: need root to apt-get install ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
