-- Speculation: the coordinator's verdict on a trial that ran (or runs) with other rungs than
-- its round's, once it judged the trial's curve against them (`rejudge` = 1, revise_round.lua).
-- 'prune': it is TRIAL.PRUNED at `step` with `value`, as `should_prune` would have made it;
--          reports after `step` are dropped, a running attempt loses the trial.
-- 'again': it is sent again as its next attempt (send_again.lua).
-- 'keep':  it stays as it is (only `rejudge` is cleared).
-- KEYS[1] lock   KEYS[2] meta   KEYS[3] trial   KEYS[4] lease   KEYS[5] running
-- KEYS[6] events   KEYS[7] reports   KEYS[8] counters
-- ARGV[1] lock value   ARGV[2] epoch   ARGV[3] trial number   ARGV[4] the attempt judged
-- ARGV[5] 'prune' | 'again' | 'keep'   ARGV[6] step   ARGV[7] value
-- Returns {'ok'}, {'changed'} (another attempt or no longer to judge: judge it again),
-- {'wiped'}, {'lease_lost'} or {STUDY.CANCELLED}.
if redis.call('EXISTS', KEYS[2]) == 0 then return {'wiped'} end
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return {'wiped'} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
if redis.call('HGET', KEYS[2], 'state') == STUDY.CANCELLED then return {STUDY.CANCELLED} end
local h = redis.call('HMGET', KEYS[3], 'status', 'attempt', 'rejudge', 'params', 'rungs')
if h[3] ~= '1' or h[2] ~= ARGV[4] or h[1] == TRIAL.QUEUED then return {'changed'} end
if ARGV[5] == 'again' then
  send_again(KEYS[3], KEYS[4], KEYS[7], KEYS[5], KEYS[8], ARGV[3], h[4], h[5])
  return {'ok'}
end
if ARGV[5] == 'prune' then
  local step = tonumber(ARGV[6])
  local kept = {}
  for _, entry in ipairs(redis.call('LRANGE', KEYS[7], 0, -1)) do
    if cjson.decode(entry)[1] <= step then kept[#kept + 1] = entry end
  end
  redis.call('DEL', KEYS[7], KEYS[4])
  if #kept > 0 then redis.call('RPUSH', KEYS[7], unpack(kept)) end
  redis.call('SREM', KEYS[5], ARGV[3])
  redis.call('HDEL', KEYS[3], 'score', 'error', 'token')
  redis.call('HSET', KEYS[3], 'status', TRIAL.PRUNED, 'last_step', ARGV[6],
             'last_value', ARGV[7])
  if h[1] == TRIAL.RUNNING then
    redis.call('HSET', KEYS[3], 'finished_at', now())
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'finished',
               'trial', ARGV[3], 'attempt', ARGV[4], 'status', TRIAL.PRUNED)
  end
end
redis.call('HDEL', KEYS[3], 'rejudge')
return {'ok'}
