-- A worker's heartbeat: renew the lease of the TRIAL.RUNNING attempt it owns.
-- KEYS[1] trial   KEYS[2] lease
-- ARGV[1] attempt   ARGV[2] token   ARGV[3] lease in ms
-- Returns 1, or 0 when this attempt no longer owns the trial.
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'token')
if h[1] ~= TRIAL.RUNNING or tonumber(h[2]) ~= tonumber(ARGV[1]) or h[3] ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
