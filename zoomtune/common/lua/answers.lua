-- Library, defined before every script: the answer of a coordinator script that changes trials
-- and tells the loop which (revise_round.lua, settle_trial.lua), kept under a key of its own
-- call for ANSWER_SECONDS. redis-py sends a call again when its reply was lost (a dropped
-- connection, a timeout: `retry_on_error`), so a script that already ran runs a second time
-- with the same arguments; that run finds nothing left to do and would answer so, and the
-- loop would never send the trials the first run queued again. It returns the first answer.
local function remembered(key)
  local answer = redis.call('GET', key)
  if answer then return cjson.decode(answer) end
  return nil
end

local function remember(key, answer)
  redis.call('SET', key, cjson.encode(answer), 'EX', ANSWER_SECONDS)
  return answer
end
