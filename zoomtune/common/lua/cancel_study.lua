-- Stop a study for good: STUDY.RUNNING becomes STUDY.CANCELLED. Any process may run it (no
-- lock): `coordinator cancel`.
-- Only marks the study cancelled (a few commands, whatever its size): from then on no round is
-- written, no attempt starts (workers drop the messages of its QUEUED trials) and a trial
-- handed back fails; cancel_trials.lua then fails the QUEUED trials a batch at a time. The
-- study event goes first, so a coordinator reading the stream learns of the cancel before it
-- sees the trials finish.
-- KEYS[1] meta   KEYS[2] events
-- ARGV[1] reason
-- Returns {'ok' or 'again' (it was already cancelled), trial count, epoch},
-- {'finished', state} (complete or failed) or {'unknown_study'}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown_study'} end
if state ~= STUDY.RUNNING and state ~= STUDY.CANCELLED then return {'finished', state} end
if state == STUDY.RUNNING then
  redis.call('HSET', KEYS[1], 'state', STUDY.CANCELLED, 'message', ARGV[1], 'finished_at', now())
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'study',
             'state', STUDY.CANCELLED)
end
return {state == STUDY.RUNNING and 'ok' or 'again', redis.call('HGET', KEYS[1], 'trials') or '0',
        redis.call('HGET', KEYS[1], 'epoch') or ''}
