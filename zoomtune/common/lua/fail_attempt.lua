-- A worker's main process ends an attempt it watched fail (e.g. the hard time limit): the
-- TRIAL.RUNNING trial becomes TRIAL.FAILED, without a retry.
-- KEYS[1] trial   KEYS[2] lease   KEYS[3] running   KEYS[4] events
-- ARGV[1] trial number   ARGV[2] attempt   ARGV[3] host   ARGV[4] pid   ARGV[5] reason
-- Returns 'ok' or 'ignored' (not that process's running attempt).
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'host', 'pid')
if h[1] ~= TRIAL.RUNNING or tonumber(h[2]) ~= tonumber(ARGV[2]) or h[3] ~= ARGV[3]
   or h[4] ~= ARGV[4] then
  return 'ignored'
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'status', TRIAL.FAILED, 'error', ARGV[5], 'finished_at', now())
redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'finished',
           'trial', ARGV[1], 'attempt', ARGV[2], 'status', TRIAL.FAILED)
return 'ok'
