#!/usr/bin/env bash
# run.sh AIGW_BIN WORK_DIR - `aigw serve` driven by the official Node SDKs
# (tests/meson.build's test 'serve-node').
#
# Installs the SDKs named by package.json and pinned by package-lock.json
# from the npm registry into WORK_DIR/node-serve (npm ci, done again only
# when the lockfile changed), then runs serve.test.mjs with Node's own test
# runner.  Exits 77 (meson's "skipped") only when node or npm is missing.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 AIGW_BIN WORK_DIR" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
aigw=$1
work=$2/node-serve

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: '$tool' is not on PATH; the serve-node test needs Node.js 20 or later" \
             "with npm, and the npm registry"
        exit 77
    fi
done
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "FAIL: Node.js $(node --version) is too old: the serve-node test needs 20 or later" >&2
    exit 1
fi
if [ ! -x "$aigw" ]; then
    echo "FAIL: not an executable: $aigw" >&2
    exit 1
fi

mkdir -p "$work"
stamp=$work/node_modules/.aigw-package-lock.json
if ! cmp -s "$here/package-lock.json" "$stamp" || ! cmp -s "$here/package.json" "$work/package.json"; then
    cp "$here/package.json" "$here/package-lock.json" "$work/"
    echo "installing the SDKs into $work (npm ci)"
    if ! (cd "$work" && npm ci --no-audit --no-fund --loglevel=error); then
        echo "FAIL: npm ci could not install tests/node/package-lock.json from the registry" >&2
        exit 1
    fi
    cp "$here/package-lock.json" "$stamp"
fi
echo "node $(node --version); openai $(node -p "require('$work/node_modules/openai/package.json').version");" \
     "@anthropic-ai/sdk $(node -p "require('$work/node_modules/@anthropic-ai/sdk/package.json').version")"

export AIGW_BIN=$aigw AIGW_NODE_DIR=$work
exec node --test --test-reporter=spec "$here/serve.test.mjs"
