-- Release the coordinator lock if this coordinator still holds it.
-- KEYS[1] lock
-- ARGV[1] lock value
-- Returns 1 when released, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
