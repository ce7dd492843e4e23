-- wrk script for benchmarks/sync.py: POSTs pre-built sync requests, each with its own path
-- (one machine id each) and body (deflate-compressed, as agents send them).
--
-- The request file (env BENCH_REQUESTS) holds "<count>\n", then per request
-- "<path length> <body length>\n<path><body>". Each wrk thread takes every n-th request from
-- its own offset, so no two threads send the same body (event uploads stay unique until the
-- list wraps around). The secret comes from env BENCH_SECRET.
--
-- done() prints one line "BENCH_JSON {...}" with the exact latency percentiles, errors, and the
-- fewest requests one thread started (its first that many bodies were all sent).

local requests = {}
local threads = {}
local counter = 1

local function load(path)
  local f = assert(io.open(path, "rb"))
  local count = tonumber(f:read("*l"))
  local list = {}
  for i = 1, count do
    local lengths = f:read("*l")
    local plen, blen = lengths:match("^(%d+) (%d+)$")
    local p = f:read(tonumber(plen))
    local b = f:read(tonumber(blen))
    list[i] = { path = p, body = b }
  end
  f:close()
  return list
end

function setup(thread)
  thread:set("id", counter)
  thread:set("nthreads", tonumber(os.getenv("BENCH_THREADS") or "2"))
  table.insert(threads, thread)
  counter = counter + 1
end

function init(args)
  local headers = {
    ["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json",
    ["Content-Encoding"] = "deflate",
    ["Authorization"] = "Bearer " .. os.getenv("BENCH_SECRET"),
    ["User-Agent"] = "santactl-sync/2026.8.1",
  }
  local list = load(os.getenv("BENCH_REQUESTS"))
  -- Pre-format this thread's share once: request() then only returns a string.
  for i = id, #list, nthreads do
    local r = list[i]
    table.insert(requests, wrk.format("POST", r.path, headers, r.body))
  end
  position = 0
  sent = 0
  non200 = 0
end

function request()
  sent = sent + 1
  position = position + 1
  if position > #requests then position = 1 end
  return requests[position]
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    if non200 <= 3 then
      io.stderr:write("HTTP " .. status .. ": " .. string.sub(body or "", 1, 200) .. "\n")
    end
  end
end

function done(summary, latency, requests_stats)
  local bad = 0
  local fewest = nil
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non200") or 0)
    local n = thread:get("sent") or 0
    if fewest == nil or n < fewest then fewest = n end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non200": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"status_errors": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "fewest_sent": %d}\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout,
    e.status, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, fewest or 0))
end
