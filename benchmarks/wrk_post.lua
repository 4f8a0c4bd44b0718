-- wrk script: POST single-row JSON bodies to /predict.
--
--   wrk -t2 -c8 -d20s -s benchmarks/wrk_post.lua http://127.0.0.1:8000/predict [-- bodies.jsonl]
--
-- bodies.jsonl holds one request body per line (benchmarks/bodies.py writes them from the model card); without
-- it, a few rows of the diabetes model's features are built here. See wrk_common.lua.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "wrk_common.lua")

local FEATURES = { "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6" }

-- Diabetes features are centred and scaled to roughly [-0.1, 0.1]: a deterministic spread across that range.
local function row(seed)
  local fields = {}
  for j, name in ipairs(FEATURES) do
    local value = ((seed * 37 + j * 11) % 21 - 10) / 100
    fields[#fields + 1] = string.format('"%s": %.4f', name, value)
  end
  return "{" .. table.concat(fields, ", ") .. "}"
end

common.install(function()
  local bodies = {}
  for i = 1, 64 do
    bodies[i] = '{"instances": [' .. row(i) .. "]}"
  end
  return bodies
end)
