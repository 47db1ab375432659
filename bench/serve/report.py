#!/usr/bin/env python3
"""Measuring and reporting for scripts/bench-serve (python3 stdlib only).

  report.py freeport
      Print a free TCP port on 127.0.0.1.
  report.py measure --results FILE --row ID --conns N --threads T
                    --seconds S [--warmup W] --url URL --lua FILE
                    --pid PID [--upstream-pid PID] [--upstream-log FILE]
      Warm up, then run wrk once and append one JSON record to FILE: wrk's
      counts and latency percentiles, the CPU time (utime+stime from
      /proc/PID/stat, PID and its descendants) used during the run, VmRSS
      and VmHWM at its end, and the upstream's access log lines per key.
  report.py probe --url URL [--header 'Name: value']...
      Send the bench POST once; print the status and the body's first bytes;
      exit 1 unless it is a 200 with a chat completion.
  report.py skip --results FILE --row ID --reason TEXT
      Record a row that could not run.
  report.py report --results FILE --meta FILE [--out FILE.json]
      Print the markdown table and the target ratios; write the JSON.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")

ROWS = [
    ("a", "(a) upstream direct (nginx)"),
    ("b", "(b) nginx proxy_pass, keep-alive"),
    ("c", "(c) aigw serve, one key"),
    ("d", "(d) Portkey gateway, fallback config"),
    ("c-failover", "(c) aigw serve, 429 primary (Retry-After: 30)"),
    ("c-failover-every", "(c) aigw serve, 429 primary, no cooldown"),
    ("d-failover", "(d) Portkey, 429 primary (fallback)"),
]
LABELS = dict(ROWS)


# --- /proc -----------------------------------------------------------------

def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # the command may hold spaces and parentheses: split after the last ')'
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15
    return int(rest[1]), int(rest[11]) + int(rest[12])


def tree(pid):
    """pid and its descendants that are alive now."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid, _ = _stat(name)
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [int(pid)]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pid):
    total = 0
    for p in tree(pid):
        try:
            total += _stat(p)[1]
        except (OSError, ValueError, IndexError):
            pass
    return total


def mem_kib(pid):
    rss = hwm = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1])
        except OSError:
            pass
    return rss, hwm


def log_counts(path):
    counts = {}
    if not path or not os.path.exists(path):
        return counts
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                key = f"{parts[0]} {parts[1]}"
                counts[key] = counts.get(key, 0) + 1
    return counts


def wrk(args, seconds, latency):
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.conns}", f"-d{seconds}s",
           "--timeout", "10s", "-s", args.lua]
    if latency:
        cmd.append("--latency")
    cmd.append(args.url)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, check=False)
    for line in r.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):]), r.stdout
    raise SystemExit(f"wrk printed no result (exit {r.returncode}):\n{r.stdout}")


# --- commands --------------------------------------------------------------

def cmd_freeport(_args):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_measure(args):
    if args.warmup > 0:
        wrk(args, args.warmup, latency=False)
    up_before = log_counts(args.upstream_log)
    up_cpu0 = cpu_ticks(args.upstream_pid) if args.upstream_pid else 0
    cpu0 = cpu_ticks(args.pid)
    t0 = time.monotonic()
    res, text = wrk(args, args.seconds, latency=True)
    t1 = time.monotonic()
    cpu1 = cpu_ticks(args.pid)
    up_cpu1 = cpu_ticks(args.upstream_pid) if args.upstream_pid else 0
    rss, hwm = mem_kib(args.pid)
    up_after = log_counts(args.upstream_log)
    upstream = {k: up_after.get(k, 0) - up_before.get(k, 0)
                for k in sorted(set(up_after) | set(up_before))}
    upstream = {k: v for k, v in upstream.items() if v}

    up_ok = sum(v for k, v in upstream.items() if k.endswith(" 200"))
    n = res["requests"]
    errors = sum(res["errors"].values())
    served = n - res["errors"]["status"]
    wall = t1 - t0
    cpu_s = (cpu1 - cpu0) / CLK_TCK
    rps = n / (res["duration_us"] / 1e6) if res["duration_us"] else 0.0
    cores = cpu_s / wall if wall > 0 else 0.0
    rec = {
        "row": args.row,
        "label": LABELS.get(args.row, args.row),
        "conns": args.conns,
        "threads": args.threads,
        "seconds": args.seconds,
        "requests": n,
        "served_2xx": served,
        "errors": res["errors"],
        "error_total": errors,
        "rps": round(rps, 1),
        "p50_us": res["p50_us"],
        "p90_us": res["p90_us"],
        "p99_us": res["p99_us"],
        "mean_us": res["mean_us"],
        "max_us": res["max_us"],
        "cpu_s": round(cpu_s, 3),
        "cpu_us_per_req": round(cpu_s * 1e6 / n, 2) if n else None,
        "cores_used": round(cores, 3),
        "rps_per_core": round(n / cpu_s, 1) if cpu_s > 0 else None,
        "rss_mib": round(rss / 1024, 2),
        "hwm_mib": round(hwm / 1024, 2),
        "upstream_cpu_us_per_req": (
            round((up_cpu1 - up_cpu0) / CLK_TCK * 1e6 / n, 2)
            if args.upstream_pid and n else None),
        "upstream_requests": upstream,
        "upstream_requests_total": sum(upstream.values()),
        # every served request is one 2xx answer of the upstream: calls per
        # 2xx counted at the upstream, so that requests still in flight when
        # wrk stops count on both sides
        "upstream_per_served": (round(sum(upstream.values()) / up_ok, 4)
                                if up_ok else None),
    }
    with open(args.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    warn = f"  ({errors} errors: {res['errors']})" if errors else ""
    print(f"  {args.row:<17} c={args.conns:<3} {rps:9.0f} req/s  "
          f"p50 {res['p50_us']} us  p99 {res['p99_us']} us  "
          f"cpu {rec['cpu_us_per_req']} us/req  rss {rec['rss_mib']} MiB{warn}",
          file=sys.stderr)
    if errors and args.verbose:
        print(text, file=sys.stderr)


def cmd_probe(args):
    import urllib.request
    import urllib.error
    body = os.environ.get("BENCH_BODY") or \
        '{"model":"bench:m1","messages":[{"role":"user","content":"hi"}]}'
    req = urllib.request.Request(args.url, data=body.encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", "Bearer anything")
    for h in args.header or []:
        name, _, value = h.partition(":")
        req.add_header(name.strip(), value.strip())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode("utf-8", "replace")
    except OSError as e:
        status, text = 0, str(e)
    print(f"HTTP {status}: {text[:300]}")
    ok = status == 200 and '"chat.completion"' in text
    sys.exit(0 if ok else 1)


def cmd_skip(args):
    with open(args.results, "a") as f:
        f.write(json.dumps({"row": args.row, "label": LABELS.get(args.row, args.row),
                            "skipped": args.reason}) + "\n")


def _fmt(v, nd=0):
    if v is None:
        return "—"
    if isinstance(v, float) or nd:
        return f"{v:,.{nd}f}"
    return f"{v:,}"


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return round(a / b, 3)


def cmd_report(args):
    with open(args.meta) as f:
        meta = json.load(f)
    recs = []
    with open(args.results) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    by = {}
    skipped = {}
    for r in recs:
        if "skipped" in r:
            skipped[r["row"]] = r["skipped"]
        else:
            by[(r["row"], r["conns"])] = r
    conns = sorted({c for (_, c) in by})
    # added latency: the row minus the upstream direct, same percentile and conns
    for (row, c), r in by.items():
        base = by.get(("a", c))
        r["added_p50_us"] = r["p50_us"] - base["p50_us"] if base else None
        r["added_p99_us"] = r["p99_us"] - base["p99_us"] if base else None

    out = []
    out.append(f"Loopback, {meta.get('seconds')} s per run "
               f"(after a {meta.get('warmup')} s warm-up), wrk -t1 -c1 and -t2 -c16, "
               f"POST /v1/chat/completions; {meta.get('cpus')} cores ({meta.get('cpu_model')}).")
    out.append(f"Versions: {meta.get('nginx')}; {meta.get('wrk')}; "
               f"{meta.get('aigw')}; @portkey-ai/gateway {meta.get('portkey')} "
               f"on node {meta.get('node')}.")
    out.append("")
    out.append("| server under test | conn | req/s | p50 µs | p99 µs | added p50 µs "
               "| added p99 µs | CPU µs/req | req/s per core | RSS MiB (peak) |")
    out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for row, label in ROWS:
        if row in skipped:
            out.append(f"| {label} | — | skipped: {skipped[row]} | | | | | | | |")
            continue
        for c in conns:
            r = by.get((row, c))
            if not r:
                continue
            err = f" ({r['error_total']} errors)" if r["error_total"] else ""
            out.append(
                f"| {label} | {c} | {_fmt(r['rps'])}{err} | {_fmt(r['p50_us'])} "
                f"| {_fmt(r['p99_us'])} | {_fmt(r['added_p50_us'])} "
                f"| {_fmt(r['added_p99_us'])} | {_fmt(r['cpu_us_per_req'], 1)} "
                f"| {_fmt(r['rps_per_core'])} | {r['rss_mib']:.1f} ({r['hwm_mib']:.1f}) |")
    out.append("")
    out.append("CPU: utime+stime of the server under test only (b: the proxy nginx, "
               "not the upstream; d: the node process tree). req/s per core = "
               "requests ÷ CPU seconds used. Added latency: the row minus the "
               "upstream direct at the same percentile and connections.")
    if (meta.get("cpus") or 0) <= 2:
        out.append("At 16 connections wrk's two threads, the upstream and the "
                   "server under test share the machine's cores: p99 there is "
                   "mostly scheduling, and an added p99 can come out negative.")
    out.append("")

    ratios = {}
    lines = []
    for c in conns:
        a, b, cc, d = (by.get((x, c)) for x in ("a", "b", "c", "d"))
        fo, fe = by.get(("c-failover", c)), by.get(("c-failover-every", c))
        dfo = by.get(("d-failover", c))
        rc = {}
        if cc and b:
            rc["aigw_cpu_per_req_over_nginx_proxy"] = _ratio(
                cc["cpu_us_per_req"], b["cpu_us_per_req"])
        if cc and d:
            rc["aigw_rps_per_core_over_portkey"] = _ratio(
                cc["rps_per_core"], d["rps_per_core"])
            rc["aigw_rps_over_portkey"] = _ratio(cc["rps"], d["rps"])
        if cc and fo:
            rc["failover_cpu_per_req_over_one_key"] = _ratio(
                fo["cpu_us_per_req"], cc["cpu_us_per_req"])
            rc["failover_upstream_per_served"] = fo["upstream_per_served"]
        if cc and fe:
            rc["failover_every_cpu_per_req_over_one_key"] = _ratio(
                fe["cpu_us_per_req"], cc["cpu_us_per_req"])
            rc["failover_every_upstream_per_served"] = fe["upstream_per_served"]
            rc["failover_every_extra_p50_us"] = fe["p50_us"] - cc["p50_us"]
            if a:
                rc["one_upstream_call_p50_us"] = a["p50_us"]
        if dfo:
            rc["portkey_failover_upstream_per_served"] = dfo["upstream_per_served"]
            if d:
                rc["portkey_failover_cpu_per_req_over_one_key"] = _ratio(
                    dfo["cpu_us_per_req"], d["cpu_us_per_req"])
        ratios[str(c)] = rc

        def g(k, fmt="{:.2f}"):
            v = rc.get(k)
            return "—" if v is None else fmt.format(v)
        lines.append(f"- {c} conn: aigw CPU/req ÷ nginx proxy CPU/req = "
                     f"{g('aigw_cpu_per_req_over_nginx_proxy')} (target ≤ 1.5); "
                     f"aigw req/s per core ÷ Portkey's = "
                     f"{g('aigw_rps_per_core_over_portkey', '{:.1f}')} (target ≥ 10; "
                     f"raw req/s ratio {g('aigw_rps_over_portkey', '{:.1f}')})")
        lines.append(f"  failover, Retry-After 30: CPU/req ÷ one-key = "
                     f"{g('failover_cpu_per_req_over_one_key')}, upstream calls per served "
                     f"request {g('failover_upstream_per_served', '{:.3f}')}; "
                     f"no cooldown: CPU/req ÷ one-key = "
                     f"{g('failover_every_cpu_per_req_over_one_key')}, upstream calls per "
                     f"served {g('failover_every_upstream_per_served', '{:.3f}')}, extra p50 "
                     f"{g('failover_every_extra_p50_us', '{:.0f}')} µs vs one upstream call "
                     f"(direct p50) {g('one_upstream_call_p50_us', '{:.0f}')} µs; Portkey "
                     f"failover upstream calls per served "
                     f"{g('portkey_failover_upstream_per_served', '{:.3f}')}")
    out.append("Targets:")
    out.extend(lines)
    if skipped:
        out.append("")
        for row, why in skipped.items():
            out.append(f"- {LABELS.get(row, row)}: skipped: {why}")
    print("\n".join(out))

    if args.out:
        doc = {"meta": meta, "rows": list(by.values()), "skipped": skipped,
               "ratios": ratios}
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("freeport")
    m = sub.add_parser("measure")
    m.add_argument("--results", required=True)
    m.add_argument("--row", required=True)
    m.add_argument("--conns", type=int, required=True)
    m.add_argument("--threads", type=int, required=True)
    m.add_argument("--seconds", type=int, required=True)
    m.add_argument("--warmup", type=int, default=0)
    m.add_argument("--url", required=True)
    m.add_argument("--lua", required=True)
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--upstream-pid", type=int)
    m.add_argument("--upstream-log")
    m.add_argument("--verbose", action="store_true")
    pr = sub.add_parser("probe")
    pr.add_argument("--url", required=True)
    pr.add_argument("--header", action="append")
    s = sub.add_parser("skip")
    s.add_argument("--results", required=True)
    s.add_argument("--row", required=True)
    s.add_argument("--reason", required=True)
    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--meta", required=True)
    r.add_argument("--out")
    args = p.parse_args()
    {"freeport": cmd_freeport, "measure": cmd_measure, "probe": cmd_probe,
     "skip": cmd_skip,
     "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
