#!/bin/sh
# run_test.sh SRCDIR INCLUDEDIR LIBDIR BUILDDIR - runs the Go binding's tests
# against the libaigw just built, offline (no third-party modules).
set -eu
src=$1; inc=$2; libdir=$3; build=$4
command -v go >/dev/null 2>&1 || { echo "go not installed: skipping"; exit 77; }
export CGO_ENABLED=1
export CGO_CFLAGS="-I$inc"
export CGO_LDFLAGS="-L$libdir -Wl,-rpath,$libdir"
export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local
export GOCACHE="$build/go-cache" GOPATH="$build/go-path"
cd "$src"
exec go test -count=1 -v ./...
