-- Library, defined before every script: a message's payload checked against the trial it names
-- (start_attempt.lua, reject_attempt.lua), so that both refuse the same forgeries. ARGV[from..]
-- holds the payload as pairs: a field of the trial's record, and the canonical JSON the message
-- carries for it. One HMGET of `trial_key` reads `fields` and then the payload's fields; returns
-- those values (h[1] is nil for a trial that does not exist) and the first payload field whose
-- stored value differs (nil when none does).
local function read_with_payload(trial_key, fields, from)
  local own = #fields
  for i = from, #ARGV, 2 do fields[#fields + 1] = ARGV[i] end
  local h = redis.call('HMGET', trial_key, unpack(fields))
  local j = own + 1
  for i = from, #ARGV, 2 do
    if h[j] ~= ARGV[i + 1] then return h, ARGV[i] end
    j = j + 1
  end
  return h, nil
end
