-- A worker appends an intermediate value of the TRIAL.RUNNING attempt it owns; the list keeps
-- the last REPORTS_MAXLEN.
-- KEYS[1] trial   KEYS[2] reports
-- ARGV[1] attempt   ARGV[2] token   ARGV[3] entry json [step, value]
-- Returns 1; 0 when this attempt no longer owns the trial; or the trial's rungs json when they
-- changed since its message was sent (a round run ahead, `rejudge` = 1: revise_round.lua), so
-- that `should_prune` decides on them from then on.
local h = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'token', 'rejudge', 'rungs')
if h[1] ~= TRIAL.RUNNING or tonumber(h[2]) ~= tonumber(ARGV[1]) or h[3] ~= ARGV[2] then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -REPORTS_MAXLEN, -1)
if h[4] == '1' then return h[5] end
return 1
