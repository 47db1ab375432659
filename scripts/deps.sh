#!/usr/bin/env bash
# deps.sh - install what building and testing libaigw needs, from Debian's
# packages, when it is missing.  Sourced by scripts/demo and scripts/test.
set -euo pipefail

aigw_need_pkgs() {
    local missing=()
    command -v meson >/dev/null 2>&1 || missing+=(meson)
    command -v ninja >/dev/null 2>&1 || missing+=(ninja-build)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    command -v cc >/dev/null 2>&1 || missing+=(gcc)
    command -v c++ >/dev/null 2>&1 || missing+=(g++)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    if command -v pkg-config >/dev/null 2>&1; then
        pkg-config --exists libcurl || missing+=(libcurl4-openssl-dev)
        pkg-config --exists libcjson || missing+=(libcjson-dev)
        # the Redis health store (the demo's build has it too)
        pkg-config --exists hiredis || missing+=(libhiredis-dev)
        # aigw serve's HTTP server
        pkg-config --exists libmicrohttpd || missing+=(libmicrohttpd-dev)
        if [ "${1:-}" = test ]; then
            pkg-config --exists cmocka || missing+=(libcmocka-dev)
        fi
    else
        missing+=(libcurl4-openssl-dev libcjson-dev libhiredis-dev libmicrohttpd-dev)
        [ "${1:-}" = test ] && missing+=(libcmocka-dev)
    fi
    if [ "${1:-}" = test ]; then
        command -v go >/dev/null 2>&1 || missing+=(golang-go)
        command -v nm >/dev/null 2>&1 || missing+=(binutils)
        # a second compiler: the library and the tests build with clang too
        command -v clang >/dev/null 2>&1 || missing+=(clang)
        # tests/test_store_redis.c runs a real server
        command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
        # tests/test_tls.py makes its CA and certificates (Priority: optional)
        command -v openssl >/dev/null 2>&1 || missing+=(openssl)
        # the Python package's tests: Debian's interpreter with its httpx, a
        # venv and pip to install the package as a user would
        [ -x /usr/bin/python3 ] || missing+=(python3)
        /usr/bin/python3 -c 'import httpx' >/dev/null 2>&1 || missing+=(python3-httpx)
        /usr/bin/python3 -c 'import setuptools' >/dev/null 2>&1 || missing+=(python3-setuptools)
        /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
        /usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    fi
    printf '%s\n' "${missing[@]+"${missing[@]}"}"
}

aigw_install_deps() {
    local pkgs
    pkgs=$(aigw_need_pkgs "${1:-}" | sort -u | tr '\n' ' ')
    [ -n "${pkgs// /}" ] || return 0
    echo "installing: $pkgs" >&2
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to apt-get install $pkgs" >&2; return 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    # shellcheck disable=SC2086
    $sudo apt-get install -y -qq --no-install-recommends $pkgs >&2
}
