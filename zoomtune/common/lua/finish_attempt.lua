-- Record an attempt's result (TRIAL.COMPLETE, TRIAL.FAILED or TRIAL.PRUNED) if it still owns
-- the TRIAL.RUNNING trial; a failure to retry goes back to the queue while attempts remain.
-- KEYS[1] trial   KEYS[2] lease   KEYS[3] running   KEYS[4] events   KEYS[5] meta
-- KEYS[6] counters
-- ARGV[1] trial number   ARGV[2] attempt   ARGV[3] token   ARGV[4] status   ARGV[5] score
-- ARGV[6] error   ARGV[7] retry ('1' to retry a failure)
-- ARGV[8] last step   ARGV[9] last value (of a pruned trial; '' for none)
-- Returns 'ok', 'requeued', TRIAL.FAILED, 'stale', 'finished', 'forged', 'unknown_trial' or
-- 'unknown_study'.
if redis.call('EXISTS', KEYS[5]) == 0 then return 'unknown_study' end
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'token')
if not h[1] then
  redis.call('HINCRBY', KEYS[6], 'forged_results', 1)
  return 'unknown_trial'
end
local attempt = tonumber(ARGV[2])
if tonumber(h[2]) ~= attempt then
  redis.call('HINCRBY', KEYS[6], 'stale_results', 1)
  return 'stale'
end
if h[1] ~= TRIAL.RUNNING then
  if h[3] == ARGV[3] then return 'ok' end
  redis.call('HINCRBY', KEYS[6], 'late_results', 1)
  return 'finished'
end
if h[3] ~= ARGV[3] then
  redis.call('HINCRBY', KEYS[6], 'forged_results', 1)
  return 'forged'
end
if ARGV[4] == TRIAL.FAILED and ARGV[7] == '1' then
  local max_attempts = tonumber(redis.call('HGET', KEYS[5], 'max_attempts') or '1')
  if attempt - tonumber(redis.call('HGET', KEYS[1], 'revisions') or '0') < max_attempts then
    return requeue_or_fail(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], attempt,
                           max_attempts, ARGV[6])
  end
end
local t = now()
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'finished_at', t)
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'score', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[6]) end
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'last_step', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'last_value', ARGV[9]) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'finished',
           'trial', ARGV[1], 'attempt', ARGV[2], 'status', ARGV[4])
return 'ok'
