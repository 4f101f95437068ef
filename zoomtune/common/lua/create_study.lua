-- Store a new study (state STUDY.RUNNING), or check that the stored one has the same spec.
-- KEYS[1] lock   KEYS[2] spec   KEYS[3] meta   KEYS[4] studies
-- ARGV[1] lock value   ARGV[2] spec json   ARGV[3] epoch for a new study   ARGV[4] study name
-- ARGV[5] max_attempts
-- Returns {'created', epoch}, {'exists', epoch}, {'different'}, {'corrupt'} or {'lease_lost'}.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
local existing = redis.call('GET', KEYS[2])
if existing then
  if redis.call('EXISTS', KEYS[3]) == 0 then return {'corrupt'} end
  if existing ~= ARGV[2] then return {'different'} end
  redis.call('HSET', KEYS[3], 'coordinator', ARGV[1])
  return {'exists', redis.call('HGET', KEYS[3], 'epoch')}
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], 'state', STUDY.RUNNING, 'epoch', ARGV[3], 'created_at', now(),
           'max_attempts', ARGV[5], 'rounds', 0, 'trials', 0, 'coordinator', ARGV[1])
redis.call('SADD', KEYS[4], ARGV[4])
return {'created', ARGV[3]}
