-- A worker that cannot run the study's objective says so on the trial and leaves it
-- TRIAL.QUEUED (a worker that has the objective may still run it); the coordinator sees the
-- event and stops. Only for the coordinator's own message: its payload must be the trial's, as
-- for a start (start_attempt.lua), or a forged message could stop the study.
-- KEYS[1] trial   KEYS[2] events   KEYS[3] meta   KEYS[4] counters
-- ARGV[1] trial number   ARGV[2] attempt   ARGV[3] worker   ARGV[4] reason
-- ARGV[5..] the message's payload as pairs: a field of the trial's record, and the canonical
--           JSON the message carries for it
-- Returns 'ok', 'forged' (counted) or 'ignored' (not that queued attempt, or the study is not
-- running).
if redis.call('HGET', KEYS[3], 'state') ~= STUDY.RUNNING then return 'ignored' end
local h, mismatch = read_with_payload(KEYS[1], {'status', 'attempt'}, 5)
if h[1] ~= TRIAL.QUEUED or tonumber(h[2]) ~= tonumber(ARGV[2]) then return 'ignored' end
if mismatch then
  redis.call('HINCRBY', KEYS[4], 'forged_messages', 1)
  return 'forged'
end
redis.call('HSET', KEYS[1], 'last_error', ARGV[4])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'rejected', 'trial', ARGV[1],
           'attempt', ARGV[2], 'worker', ARGV[3], 'reason', ARGV[4])
return 'ok'
