#!/usr/bin/env python3
"""profile.py - where libaigw's instructions per request go (scripts/bench --profile).

    profile.py DIR

DIR holds the profile runs of build/tests/bench --profile DIR: one callgrind
file per case, callgrind.profile.CASE.N.out, collected only inside the calls
each request makes (raw: curl_easy_perform and curl_easy_getinfo; libaigw:
aigw_client_send or aigw_client_stream, and aigw_response_free).  A run
sends 1 + 10 + N requests (children.c: the first, IR_WARM, then N), so the
figures below are per request.  Reads callgrind_annotate's listings and
prints: the instructions per request by shared object (self cost), raw vs
libaigw; the functions that run more under libaigw than under raw libcurl
(self cost, matched by object and name); and libaigw's own functions by
inclusive cost.  Debian's libcurl has no symbols for its internal functions:
they show as addresses.
"""
import collections
import os
import re
import subprocess
import sys

IR_WARM = 10  # bench/overhead/children.c
LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?)\s+\[(.*)\]\s*$")
FILE = re.compile(r"^callgrind\.profile\.(.+)\.(\d+)\.out$")


def listing(path, inclusive):
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=" + ("yes" if inclusive else "no"),
         "--threshold=100", "--auto=no", path],
        capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        where = m.group(2)
        func = where.rsplit(":", 1)[-1] if ":" in where else where
        func = re.sub(r"'\d+$", "", func)  # callgrind's recursion suffix
        obj = short(m.group(3))
        rows.append((ir, obj, func))
    return rows


def short(obj):
    base = os.path.basename(obj)
    if base == "bench":
        return "bench (malloc wrappers)"
    return re.sub(r"\.so[.\d]*$", ".so", base)


def load(d):
    cases = {}
    for name in os.listdir(d):
        m = FILE.match(name)
        if m:
            cases[m.group(1)] = (os.path.join(d, name), 1 + IR_WARM + int(m.group(2)))
    return cases


def self_by(path, n):
    by_obj, by_func = collections.Counter(), collections.Counter()
    for ir, obj, func in listing(path, False):
        by_obj[obj] += ir / n
        by_func[(obj, func)] += ir / n
    return by_obj, by_func


def total(by_obj):
    return sum(by_obj.values())


def compare(title, raw, lib, top, names=("raw libcurl", "libaigw")):
    (ro, rf), (lo, lf) = raw, lib
    print(f"\n{title}")
    print(f"  {'':44} {names[0]:>12} {names[1]:>12} {'extra':>12}")
    print(f"  {'total':44} {total(ro):12.0f} {total(lo):12.0f} {total(lo) - total(ro):+12.0f}")
    for obj in sorted(set(ro) | set(lo), key=lambda o: -(lo[o] - ro[o])):
        if abs(lo[obj]) < 1 and abs(ro[obj]) < 1:
            continue
        print(f"  {'self in ' + obj:44} {ro[obj]:12.0f} {lo[obj]:12.0f} {lo[obj] - ro[obj]:+12.0f}")
    print(f"\n  the functions that run more under {names[1]} (self Ir/request, top {top}):")
    print(f"  {'function [object]':60} {names[0][:9]:>9} {names[1][:9]:>9} {'extra':>9}")
    keys = sorted(set(rf) | set(lf), key=lambda k: -(lf[k] - rf[k]))
    for k in keys[:top]:
        print(f"  {(k[1] + ' [' + k[0] + ']')[:60]:60} {rf[k]:9.0f} {lf[k]:9.0f} {lf[k] - rf[k]:+9.0f}")


def inclusive_lib(title, path, n, top):
    rows = [r for r in listing(path, True) if r[1] == "libaigw.so"]
    rows.sort(key=lambda r: -r[0])
    tot = rows[0][0] / n if rows else 0
    print(f"\n{title}")
    print(f"  {'Ir/request':>10} {'share':>6}  function (inclusive: with what it calls)")
    seen = set()
    shown = 0
    for ir, _, func in rows:
        if func in seen:
            continue
        seen.add(func)
        print(f"  {ir / n:10.0f} {100 * ir / n / tot if tot else 0:5.1f}%  {func}")
        shown += 1
        if shown == top:
            break


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    d = sys.argv[1]
    cases = load(d)
    need = ["one-raw", "one-aigw"]
    if any(c not in cases for c in need):
        print(f"profile.py: no profile runs in {d} (build/tests/bench --profile {d})",
              file=sys.stderr)
        return 1
    per = {c: self_by(*cases[c]) for c in cases}
    print("Where the instructions go: callgrind inside the per-request calls, per request")
    compare("One key, sequential: raw libcurl vs libaigw", per["one-raw"], per["one-aigw"], 25)
    inclusive_lib("libaigw's functions, one key (inclusive Ir/request, top 30)",
                  *cases["one-aigw"], 30)
    if "failover-aigw" in per:
        compare("[429 key, ok key], default memory: libaigw 1 key vs libaigw 2 keys",
                per["one-aigw"], per["failover-aigw"], 12, ("1 key", "2 keys"))
    if "stream-raw" in per and "stream-aigw" in per:
        compare("Streaming, 200 events: raw libcurl vs libaigw", per["stream-raw"],
                per["stream-aigw"], 20)
        inclusive_lib("libaigw's functions, streaming (inclusive Ir/request, top 25)",
                      *cases["stream-aigw"], 25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
