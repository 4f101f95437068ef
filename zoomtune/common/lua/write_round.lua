-- Write a round and its trials, TRIAL.QUEUED as attempt 1, once. The round is a hash so that
-- the JSON written by Python is stored untouched.
-- KEYS[1] lock   KEYS[2] meta   KEYS[3] round   KEYS[4] events
-- ARGV[1] lock value   ARGV[2] epoch   ARGV[3] round number   ARGV[4] box json
-- ARGV[5] trial key prefix   ARGV[6] rungs json (the same for every trial of the round)
-- ARGV[7] '1': provisional (speculation, see revise_round.lua), '0': final
-- ARGV[8..] one params json per trial
-- Returns {'ok', first trial number, time}, {'exists'}, {'wiped'}, {'lease_lost'} or
-- {STUDY.CANCELLED}.
if redis.call('EXISTS', KEYS[2]) == 0 then return {'wiped'} end
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return {'wiped'} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
if redis.call('HGET', KEYS[2], 'state') == STUDY.CANCELLED then return {STUDY.CANCELLED} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'exists'} end
local first = tonumber(redis.call('HGET', KEYS[2], 'trials') or '0')
local t = now()
local count = #ARGV - 7
for i = 0, count - 1 do
  redis.call('HSET', ARGV[5] .. (first + i), 'number', first + i, 'round', ARGV[3],
             'params', ARGV[8 + i], 'rungs', ARGV[6], 'status', TRIAL.QUEUED, 'attempt', 1,
             'queued_at', t)
end
redis.call('HSET', KEYS[3], 'round', ARGV[3], 'box', ARGV[4], 'rungs', ARGV[6],
           'first_trial', first, 'trials', count, 'written_at', t, 'provisional', ARGV[7],
           'written_ahead', ARGV[7])
redis.call('HSET', KEYS[2], 'rounds', ARGV[3], 'trials', first + count)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'round', 'round', ARGV[3])
return {'ok', first, t}
