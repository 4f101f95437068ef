-- Take a study's coordinator lock, or say who holds it.
-- KEYS[1] lock   KEYS[2] meta
-- ARGV[1] lock value "<token> <host:pid>"   ARGV[2] ttl in ms
-- ARGV[3] a previous lock value that may be taken over ('' for none)
-- Returns {'ok'} or {'locked', current value, its PTTL}.
local current = redis.call('GET', KEYS[1])
if not current or current == ARGV[1] or (ARGV[3] ~= '' and current == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'coordinator', ARGV[1]) end
  return {'ok'}
end
return {'locked', current, redis.call('PTTL', KEYS[1])}
