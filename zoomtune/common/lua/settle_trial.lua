-- Speculation: the coordinator's verdict on a finished trial that ran with other rungs than
-- its round's (`rejudge` = 1, revise_round.lua), once it judged the trial's curve against them.
-- 'again': it is sent again as its next attempt (send_again.lua).
-- 'keep':  it stays as it is (only `rejudge` is cleared).
-- KEYS[1] lock   KEYS[2] meta   KEYS[3] trial   KEYS[4] lease   KEYS[5] running
-- KEYS[6] reports   KEYS[7] counters   KEYS[8] this call's answer (answers.lua)
-- ARGV[1] lock value   ARGV[2] epoch   ARGV[3] trial number   ARGV[4] the attempt judged
-- ARGV[5] 'keep' | 'again'
-- Returns {'ok'}, {'changed'} (not a finished trial to judge, at that attempt, of a running
-- study: nothing done), {'wiped'}, {'lease_lost'} or {STUDY.CANCELLED}.
local earlier = remembered(KEYS[8])
if earlier then return earlier end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'wiped'} end
if redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[2] then return {'wiped'} end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lease_lost'} end
local state = redis.call('HGET', KEYS[2], 'state')
if state == STUDY.CANCELLED then return {STUDY.CANCELLED} end
if state ~= STUDY.RUNNING then return {'changed'} end
local h = redis.call('HMGET', KEYS[3], 'status', 'attempt', 'rejudge', 'params', 'rungs')
local finished = h[1] == TRIAL.COMPLETE or h[1] == TRIAL.FAILED or h[1] == TRIAL.PRUNED
if h[3] ~= '1' or h[2] ~= ARGV[4] or not finished then return {'changed'} end
if ARGV[5] == 'again' then
  send_again(KEYS[3], KEYS[4], KEYS[6], KEYS[5], KEYS[7], ARGV[3], h[4], h[5])
else
  redis.call('HDEL', KEYS[3], 'rejudge')
end
return remember(KEYS[8], {'ok'})
