-- The coordinator marks the study STUDY.RUNNING, STUDY.COMPLETE or STUDY.FAILED. A cancelled
-- study stays cancelled.
-- KEYS[1] lock   KEYS[2] meta   KEYS[3] events
-- ARGV[1] lock value ('' to skip the check)   ARGV[2] epoch (unused)   ARGV[3] state
-- ARGV[4] message
-- Returns 'ok', 'wiped', 'lease_lost' or STUDY.CANCELLED.
if redis.call('EXISTS', KEYS[2]) == 0 then return 'wiped' end
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lease_lost' end
if redis.call('HGET', KEYS[2], 'state') == STUDY.CANCELLED then return STUDY.CANCELLED end
redis.call('HSET', KEYS[2], 'state', ARGV[3], 'message', ARGV[4], 'finished_at', now())
redis.call('XADD', KEYS[3], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'study', 'state', ARGV[3])
return 'ok'
