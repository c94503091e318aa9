-- Shared by the wrk scripts: one machine-readable line with the run's totals and latencies.
-- bench/run.py parses the line that starts with "BENCH ".
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d errors_status=%d errors_socket=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
