-- A worker claims an attempt of a TRIAL.QUEUED trial: it becomes TRIAL.RUNNING with a lease.
-- A message whose payload (its params) is not the trial's is a forgery, unless it is an older
-- attempt's. The attempt is handed the stored rungs, whatever rungs its message carries (a
-- round run ahead may have changed them in place since it was sent, revise_round.lua): it
-- decides on them from its first step, so it needs no judging (`rejudge` is cleared).
-- KEYS[1] trial   KEYS[2] lease   KEYS[3] running   KEYS[4] events   KEYS[5] meta
-- KEYS[6] counters
-- ARGV[1] trial number   ARGV[2] attempt   ARGV[3] token   ARGV[4] worker   ARGV[5] host
-- ARGV[6] device   ARGV[7] pid   ARGV[8] lease in ms
-- ARGV[9..] the message's payload as pairs: a field of the trial's record, and the canonical
--           JSON the message carries for it
-- Returns {'ok', started_at, the stored rungs json}, {'forged', field}, or {reason}:
-- 'unknown_study', 'unknown_trial', 'finished', 'stale', 'ahead', 'duplicate', 'study_<state>'.
local state = redis.call('HGET', KEYS[5], 'state')
if not state then return {'unknown_study'} end
local h, mismatch = read_with_payload(KEYS[1], {'status', 'attempt', 'token', 'rungs'}, 9)
if not h[1] then
  redis.call('HINCRBY', KEYS[6], 'forged_messages', 1)
  return {'unknown_trial'}
end
if mismatch then
  -- An older attempt's payload: the trial was revised since (revise_round.lua).
  if tonumber(ARGV[2]) < tonumber(h[2]) then
    redis.call('HINCRBY', KEYS[6], 'stale_deliveries', 1)
    return {'stale'}
  end
  redis.call('HINCRBY', KEYS[6], 'forged_messages', 1)
  return {'forged', mismatch}
end
local attempt = tonumber(ARGV[2])
local stored = tonumber(h[2])
if h[1] == TRIAL.RUNNING and h[3] == ARGV[3] and attempt == stored then
  return {'ok', redis.call('HGET', KEYS[1], 'started_at'), h[4] or '[]'}
end
if h[1] == TRIAL.COMPLETE or h[1] == TRIAL.FAILED or h[1] == TRIAL.PRUNED then
  if state == STUDY.CANCELLED then return {'study_' .. STUDY.CANCELLED} end
  redis.call('HINCRBY', KEYS[6], 'duplicate_deliveries', 1)
  return {'finished'}
end
if attempt < stored then
  redis.call('HINCRBY', KEYS[6], 'stale_deliveries', 1)
  return {'stale'}
end
if attempt > stored then
  redis.call('HINCRBY', KEYS[6], 'forged_messages', 1)
  return {'ahead'}
end
if h[1] == TRIAL.RUNNING then
  redis.call('HINCRBY', KEYS[6], 'duplicate_deliveries', 1)
  return {'duplicate'}
end
if state ~= STUDY.RUNNING then return {'study_' .. state} end
local t = now()
redis.call('HSET', KEYS[1], 'status', TRIAL.RUNNING, 'token', ARGV[3], 'worker', ARGV[4],
           'host', ARGV[5], 'device', ARGV[6], 'pid', ARGV[7], 'started_at', t)
redis.call('HDEL', KEYS[1], 'rejudge')
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[8])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'started', 'trial', ARGV[1],
           'attempt', ARGV[2], 'worker', ARGV[4])
return {'ok', t, h[4] or '[]'}
