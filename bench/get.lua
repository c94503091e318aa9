-- GET <prefix><random line>: wrk -s bench/get.lua URL -- LINES_FILE PREFIX [TOKEN]
-- LINES_FILE has one patient id (or list query string) a line; TOKEN, when given, is a bearer token.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

function init(args)
  ids = {}
  for line in io.lines(args[1]) do
    if #line > 0 then ids[#ids + 1] = line end
  end
  prefix = args[2]
  headers = {Accept = "application/json"}
  if args[3] then headers["Authorization"] = "Bearer " .. args[3] end
  math.randomseed(os.time() * 100 + (thread_number or 0))
end

function request()
  return wrk.format("GET", prefix .. ids[math.random(#ids)], headers)
end
