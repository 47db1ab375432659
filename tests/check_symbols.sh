#!/bin/sh
# check_symbols.sh LIB MAP - the shared library exports exactly the aigw_*
# names the version script lists: no stranger, none missing.
set -eu
lib=$1
map=$2
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRV]$/ {print $3}' | sed 's/@.*//' | sort -u)
listed=$(sed -n 's/^[[:space:]]*\(aigw_[a-z0-9_]*\);.*/\1/p' "$map" | sort -u)
strangers=$(printf '%s\n' "$exported" | grep -v -x -F "$(printf '%s\n' "$listed")" || true)
missing=$(printf '%s\n' "$listed" | grep -v -x -F "$(printf '%s\n' "$exported")" || true)
status=0
if [ -n "$strangers" ]; then
    echo "exported but not in $map:"; printf '  %s\n' $strangers; status=1
fi
if [ -n "$missing" ]; then
    echo "listed in $map but not exported:"; printf '  %s\n' $missing; status=1
fi
bad=$(printf '%s\n' "$exported" | grep -v '^aigw_' || true)
if [ -n "$bad" ]; then
    echo "exported names without the aigw_ prefix:"; printf '  %s\n' $bad; status=1
fi
[ $status -eq 0 ] && echo "$(printf '%s\n' "$exported" | wc -l) symbols, all aigw_*, all listed"
exit $status
