-- Speculation: rewrite a round written ahead (provisional) with the parameters and rungs it
-- gets now. A trial whose params are unchanged is kept as it is: queued, running or finished;
-- if only its rungs changed, it gets the new ones in place. A queued one keeps its message
-- and its place in the queue: the start hands it the stored rungs (start_attempt.lua). A
-- started one gets `rejudge` = 1: it learns them with its next report (append_report.lua) and
-- the coordinator judges its curve against them once it finished (settle_trial.lua); for a
-- queued one the flag is cleared at its start. Every trial whose params changed is sent again
-- (send_again.lua).
-- KEYS[1] lock   KEYS[2] meta   KEYS[3] round   KEYS[4] running   KEYS[5] counters
-- KEYS[6] this call's answer (answers.lua)
-- ARGV[1] lock value   ARGV[2] epoch   ARGV[3] box json   ARGV[4] rungs json
-- ARGV[5] '1': still provisional, '0': final   ARGV[6] trial key prefix
-- ARGV[7] lease key prefix   ARGV[8] reports key prefix   ARGV[9..] one params json per trial
-- Returns {'ok', {trials sent again}, {trials to judge}}, {'wiped'}, {'lease_lost'},
-- {STUDY.CANCELLED}, {'missing'} (no such round) or {'final'} (no longer provisional).
local earlier = remembered(KEYS[6])
if earlier then return earlier end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'wiped'} end
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return {'wiped'} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
if redis.call('HGET', KEYS[2], 'state') == STUDY.CANCELLED then return {STUDY.CANCELLED} end
local r = redis.call('HMGET', KEYS[3], 'first_trial', 'trials', 'provisional')
if not r[1] then return {'missing'} end
if r[3] ~= '1' then return {'final'} end
local first, count = tonumber(r[1]), tonumber(r[2])
if #ARGV - 8 ~= count then return redis.error_reply('revise_round: wrong number of trials') end
local again, judge = {}, {}
for i = 0, count - 1 do
  local n = first + i
  local key = ARGV[6] .. n
  local params = ARGV[9 + i]
  local h = redis.call('HMGET', key, 'params', 'rungs')
  if h[1] ~= params then
    send_again(key, ARGV[7] .. n, ARGV[8] .. n, KEYS[4], KEYS[5], n, params, ARGV[4])
    again[#again + 1] = n
  elseif h[2] ~= ARGV[4] then
    redis.call('HSET', key, 'rungs', ARGV[4], 'rejudge', 1)
    judge[#judge + 1] = n
  end
end
redis.call('HSET', KEYS[3], 'box', ARGV[3], 'rungs', ARGV[4], 'provisional', ARGV[5])
return remember(KEYS[6], {'ok', again, judge})
