-- POST a new patient with a unique MRN: wrk -s bench/post.lua URL -- RUN_PREFIX TOKEN
-- MRNs are RUN_PREFIX-<thread>-<counter>, so every request of every thread registers a new one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "report.lua")

function init(args)
  run_prefix = args[1]
  headers = {["Content-Type"] = "application/json", Accept = "application/json",
             Authorization = "Bearer " .. args[2]}
  counter = 0
end

local template = [[{"first_name":"Ada","last_name":"Lovelace","date_of_birth":"1985-12-10",]] ..
  [["sex":"female","mrn":"%s","email":"ada@example.org","phone":"+44 20 7946 0000",]] ..
  [["address":{"line1":"12 St James's Square","city":"London","country":"GB"},]] ..
  [["insurance":{"payer":"NHS","member_id":"943 476 5919"},]] ..
  [["emergency_contact":{"name":"Charles Babbage","relationship":"friend","phone":"+44 20 7946 0001"},]] ..
  [["notes":"Prefers morning appointments."}]]

function request()
  counter = counter + 1
  local mrn = string.format("%s-%d-%d", run_prefix, thread_number, counter)
  return wrk.format("POST", "/api/v1/patients", headers, string.format(template, mrn))
end
