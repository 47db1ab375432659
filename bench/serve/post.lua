-- wrk script for scripts/bench-serve: the same POST for every row.
-- BENCH_BODY, BENCH_AUTH and BENCH_PORTKEY_CONFIG (the x-portkey-config
-- header, row d only) come from the environment.  done() prints one line,
-- "BENCH_JSON {...}", with the counts and latency percentiles in microseconds.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
    or '{"model":"bench:m1","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH") or "Bearer anything"
local portkey = os.getenv("BENCH_PORTKEY_CONFIG")
if portkey and portkey ~= "" then
    wrk.headers["x-portkey-config"] = portkey
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.mean, latency.max))
end
