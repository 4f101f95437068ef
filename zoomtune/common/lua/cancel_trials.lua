-- One batch of a cancel: trials first .. last - 1 of a study already STUDY.CANCELLED.
-- TRIAL.QUEUED trials become TRIAL.FAILED with the reason; TRIAL.RUNNING trials finish
-- normally, except those whose lease already expired, which fail too.
-- KEYS[1] meta   KEYS[2] events   KEYS[3] running
-- ARGV[1] trial key prefix   ARGV[2] lease key prefix   ARGV[3] reason   ARGV[4] epoch
-- ARGV[5] first trial   ARGV[6] last trial (excluded)
-- Returns {'ok', trials failed, trials still running}, or {'gone'} when the study is no
-- longer the cancelled one (deleted meanwhile).
if redis.call('HGET', KEYS[1], 'state') ~= STUDY.CANCELLED then return {'gone'} end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[4] then return {'gone'} end
local t = now()
local cancelled, running = 0, 0
for n = tonumber(ARGV[5]), tonumber(ARGV[6]) - 1 do
  local key = ARGV[1] .. n
  local h = redis.call('HMGET', key, 'status', 'attempt')
  local expired = h[1] == TRIAL.RUNNING and redis.call('EXISTS', ARGV[2] .. n) == 0
  if h[1] == TRIAL.QUEUED or expired then
    redis.call('SREM', KEYS[3], n)
    redis.call('HSET', key, 'status', TRIAL.FAILED, 'error', ARGV[3], 'finished_at', t)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'finished',
               'trial', n, 'attempt', h[2], 'status', TRIAL.FAILED)
    cancelled = cancelled + 1
  elseif h[1] == TRIAL.RUNNING then
    running = running + 1
  end
end
return {'ok', cancelled, running}
