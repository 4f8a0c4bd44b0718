-- Shared by wrk_post.lua and wrk_batch.lua (loaded with dofile from the same directory).
--
-- Bodies: one JSON request body per line of a file (the first script argument), cycled through in order;
-- without a file, the calling script's built-in bodies. Requests are formatted once in init(), so the client
-- spends no time building them. done() prints one line, `WRK_JSON {...}`, with exact latency percentiles in
-- microseconds and the error counts, for benchmarks/load.py to parse.

local common = {}

local function read_lines(path)
  local file = assert(io.open(path, "r"))
  local lines = {}
  for line in file:lines() do
    if line:match("%S") then
      lines[#lines + 1] = line
    end
  end
  file:close()
  assert(#lines > 0, "no request bodies in " .. path)
  return lines
end

function common.install(default_bodies)
  local requests, index = {}, 0

  function init(args)
    local bodies = args[1] and args[1] ~= "" and read_lines(args[1]) or default_bodies()
    local headers = { ["Content-Type"] = "application/json" }
    for i, body in ipairs(bodies) do
      requests[i] = wrk.format("POST", nil, headers, body)
    end
  end

  function request()
    index = index % #requests + 1
    return requests[index]
  end

  function done(summary, latency, _)
    local percentiles = {}
    for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
      percentiles[#percentiles + 1] = string.format('"%g": %d', p, latency:percentile(p))
    end
    local errors = summary.errors
    io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, '
        .. '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "stdev": %.1f, "max": %d, '
        .. '"percentiles": {%s}}}\n',
      summary.requests, summary.duration, summary.bytes, errors.connect, errors.read, errors.write, errors.status,
      errors.timeout, latency.mean, latency.stdev, latency.max, table.concat(percentiles, ", ")
    ))
  end
end

return common
