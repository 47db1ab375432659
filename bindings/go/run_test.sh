#!/bin/sh
# run_test.sh SRCDIR INCLUDEDIR LIBDIR BUILDDIR - runs the Go binding's vet and
# tests (under -race) against the libaigw just built, offline (no third-party
# modules).  The binding finds the library with `#cgo pkg-config: libaigw`:
# PKG_CONFIG_PATH points at the build tree's libaigw-uninstalled.pc
# (pkg-config prefers it to an installed libaigw.pc): meson's own
# (<builddir>/meson-uninstalled) when there is one, else the one written at
# setup into BUILDDIR (tests/meson.build), else one written here.
set -eu
src=$1; inc=$2; libdir=$3; build=$4
command -v go >/dev/null 2>&1 || { echo "go not installed: skipping"; exit 77; }
command -v pkg-config >/dev/null 2>&1 || { echo "pkg-config not installed"; exit 1; }

pcdir=
for d in "$(dirname "$libdir")/meson-uninstalled" "$build"; do
    if [ -f "$d/libaigw-uninstalled.pc" ]; then pcdir=$d; break; fi
done
if [ -z "$pcdir" ]; then
    pcdir=$build/go-pkgconfig
    mkdir -p "$pcdir"
    cat >"$pcdir/libaigw-uninstalled.pc" <<PC
Name: libaigw
Description: libaigw, uninstalled (build tree)
Version: 0
Libs: -L$libdir -Wl,-rpath,$libdir -laigw
Cflags: -I$inc
PC
fi
export PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
# it must resolve to this build tree, not to an installed libaigw
flags=$(pkg-config --cflags --libs libaigw)
case " $flags " in
    *" -I$inc "*) ;;
    *) echo "pkg-config libaigw does not point at $inc: $flags" >&2; exit 1 ;;
esac
case " $flags " in
    *" -L$libdir "*) ;;
    *) echo "pkg-config libaigw does not point at $libdir: $flags" >&2; exit 1 ;;
esac
echo "PKG_CONFIG_PATH=$PKG_CONFIG_PATH: $flags"

export CGO_ENABLED=1
unset CGO_CFLAGS CGO_LDFLAGS || true
# the .pc names the build tree's library; the run path makes the test
# binary load it even when a .pc without an rpath is used
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local
export GOCACHE="$build/go-cache" GOPATH="$build/go-path"
cd "$src"
go vet ./...
exec go test -race -count=1 -v ./...
