-- wrk done() hook shared by every compare.sh scenario: one machine-readable
-- line (latencies in microseconds) that the script parses.
--
-- Percentiles go through latency:percentile(), rescaled. wrk 4.1's
-- coordinated-omission correction can add samples below the recorded
-- minimum (it happens with pipelining, where the expected interval is per
-- response but samples are per batch); its percentile scan starts at that
-- minimum, so it never sees them and answers 0 for high ranks. The largest
-- q that still gets an answer is ~100 * seen / total; asking for p * q / 100
-- gives the p-th percentile of the samples wrk keeps. With nothing hidden,
-- q is ~100 and the results are wrk's own. `seen_pct` reports q.
local function seen_share(latency)
  local lo, hi = 0, 100
  for _ = 1, 40 do
    local mid = (lo + hi) / 2
    if latency:percentile(mid) > 0 then lo = mid else hi = mid end
  end
  return lo
end

done = function(summary, latency, requests)
  local e = summary.errors
  local q = seen_share(latency)
  local function pct(p) return latency:percentile(p * q / 100) end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "seen_pct=%.2f err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    pct(50), pct(90), pct(99), latency.max, q,
    e.connect, e.read, e.write, e.status, e.timeout))
end
