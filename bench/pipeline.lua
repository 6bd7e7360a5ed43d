-- HTTP/1.1 pipelining for wrk, as in TechEmpower's pipeline.lua: init()
-- concatenates DEPTH copies of the request (first script argument after
-- `--`, 16 by default) and every write sends the whole batch.
-- wrk records one latency sample per batch, counts one request per response.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do
    r[i] = wrk.format()
  end
  req = table.concat(r)
end

request = function()
  return req
end
