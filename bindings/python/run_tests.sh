#!/bin/sh
# run_tests.sh SRCDIR LIBRARY BUILDDIR - the Python package's tests, with the
# package installed the way a user installs it: a venv over Debian's
# interpreter (/usr/bin/python3, whose site-packages hold python3-httpx),
# `pip install` of the package, offline.  scripts/deps.sh installs
# python3-httpx, python3-venv, python3-setuptools and python3-pip.
set -eu
src=$1; lib=$2; build=$3
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" -c 'import httpx, setuptools' 2>/dev/null ||
    { echo "run_tests.sh: $py lacks httpx or setuptools (scripts/deps.sh installs them)" >&2; exit 1; }
venv=$build/py-venv
rm -rf "$venv" "$build/py-src"
"$py" -m venv --system-site-packages "$venv"
# a copy: pip builds in the tree it installs from
cp -r "$src" "$build/py-src"
rm -rf "$build/py-src/build" "$build/py-src"/*.egg-info
"$venv/bin/pip" install --quiet --no-build-isolation --no-index "$build/py-src"
cd "$build"
AIGW_LIBRARY=$lib exec "$venv/bin/python" -m unittest discover -s "$src/tests" -v
