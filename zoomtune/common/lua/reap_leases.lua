-- The coordinator sends every TRIAL.RUNNING trial whose lease expired (on Redis's clock) back
-- to the queue as the next attempt, or fails it when attempts ran out.
-- KEYS[1] lock   KEYS[2] meta   KEYS[3] running   KEYS[4] events   KEYS[5] counters
-- ARGV[1] lock value   ARGV[2] epoch   ARGV[3] trial key prefix   ARGV[4] lease key prefix
-- Returns {'ok', n1, outcome1, attempt1, n2, ...} for every expired lease (outcome 'requeued'
-- or TRIAL.FAILED, attempt the next one), or {'wiped'} or {'lease_lost'}.
if redis.call('EXISTS', KEYS[2]) == 0 then return {'wiped'} end
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return {'wiped'} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
local max_attempts = tonumber(redis.call('HGET', KEYS[2], 'max_attempts') or '1')
local out = {'ok'}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('EXISTS', ARGV[4] .. n) == 0 then
    local trial_key = ARGV[3] .. n
    local h = redis.call('HMGET', trial_key, 'status', 'attempt')
    if h[1] == TRIAL.RUNNING then
      redis.call('HINCRBY', KEYS[5], 'leases_expired', 1)
      local attempt = tonumber(h[2])
      local outcome = requeue_or_fail(trial_key, ARGV[4] .. n, KEYS[3], KEYS[4], KEYS[2], n,
                                      attempt, max_attempts, 'lease expired (worker lost)')
      table.insert(out, n)
      table.insert(out, outcome)
      table.insert(out, attempt + 1)
    else
      redis.call('SREM', KEYS[3], n)
    end
  end
end
return out
