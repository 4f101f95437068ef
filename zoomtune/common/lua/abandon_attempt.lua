-- Hand a TRIAL.RUNNING attempt back because its process died or its worker is shutting down
-- cold: the trial is requeued as the next attempt, or fails when attempts ran out.
-- KEYS[1] trial   KEYS[2] lease   KEYS[3] running   KEYS[4] events   KEYS[5] meta
-- KEYS[6] counters
-- ARGV[1] trial number   ARGV[2] attempt   ARGV[3] host   ARGV[4] pid   ARGV[5] reason
-- Returns 'requeued', TRIAL.FAILED or 'ignored' (not that process's running attempt).
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'host', 'pid')
if h[1] ~= TRIAL.RUNNING or tonumber(h[2]) ~= tonumber(ARGV[2]) or h[3] ~= ARGV[3]
   or h[4] ~= ARGV[4] then
  return 'ignored'
end
redis.call('HINCRBY', KEYS[6], 'workers_lost', 1)
local max_attempts = tonumber(redis.call('HGET', KEYS[5], 'max_attempts') or '1')
return requeue_or_fail(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1],
                       tonumber(ARGV[2]), max_attempts, ARGV[5])
