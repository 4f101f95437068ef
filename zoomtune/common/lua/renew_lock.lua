-- Extend the coordinator lock, or take it again if it expired and nobody took it meanwhile.
-- KEYS[1] lock   KEYS[2] meta
-- ARGV[1] lock value   ARGV[2] ttl in ms   ARGV[3] epoch ('' to skip the check)
-- Returns 'ok', 'wiped', STUDY.CANCELLED or 'lost'.
if redis.call('EXISTS', KEYS[2]) == 0 then return 'wiped' end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[3] then return 'wiped' end
if redis.call('HGET', KEYS[2], 'state') == STUDY.CANCELLED then return STUDY.CANCELLED end
local last = redis.call('HGET', KEYS[2], 'coordinator')
if last and last ~= ARGV[1] then return 'lost' end
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 'lost' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'ok'
