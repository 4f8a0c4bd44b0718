-- wrk script: POST 1000-row JSON bodies to /predict (the batch path).
--
--   wrk -t2 -c8 -d20s -s benchmarks/wrk_batch.lua http://127.0.0.1:8000/predict [-- batch.jsonl]
--
-- batch.jsonl holds one 1000-row request body per line (benchmarks/bodies.py writes them from the model card);
-- without it, one body of 1000 diabetes-shaped rows is built here. See wrk_common.lua.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "wrk_common.lua")

local FEATURES = { "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6" }
local ROWS = 1000

local function row(seed)
  local fields = {}
  for j, name in ipairs(FEATURES) do
    local value = ((seed * 37 + j * 11) % 21 - 10) / 100
    fields[#fields + 1] = string.format('"%s": %.4f', name, value)
  end
  return "{" .. table.concat(fields, ", ") .. "}"
end

common.install(function()
  local rows = {}
  for i = 1, ROWS do
    rows[i] = row(i)
  end
  return { '{"instances": [' .. table.concat(rows, ", ") .. "]}" }
end)
