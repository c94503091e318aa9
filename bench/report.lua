-- Shared by the wrk scripts: each thread gets a thread_number, and done() prints one
-- machine-readable line with the run's totals and latencies; bench/run.py parses the line that
-- starts with "BENCH ".
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d errors_status=%d errors_socket=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
