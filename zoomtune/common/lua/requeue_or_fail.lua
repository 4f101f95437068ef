-- Library, defined before every script (after now.lua): hand a running trial back.
-- Send a running trial back to the queue as the next attempt, or fail it when attempts ran out
-- or the study was cancelled (nobody would dispatch it again).
-- Returns 'requeued' (it is TRIAL.QUEUED again) or TRIAL.FAILED.
local function requeue_or_fail(trial_key, lease_key, running_key, events_key, meta_key, n,
                               attempt, max_attempts, reason)
  local t = now()
  redis.call('DEL', lease_key)
  redis.call('SREM', running_key, n)
  if redis.call('HGET', meta_key, 'state') == STUDY.CANCELLED then
    reason = 'cancelled: the study was cancelled (' .. reason .. ')'
  elseif attempt - tonumber(redis.call('HGET', trial_key, 'revisions') or '0') < max_attempts then
    redis.call('HSET', trial_key, 'status', TRIAL.QUEUED, 'attempt', attempt + 1,
               'last_error', reason, 'queued_at', t)
    redis.call('HDEL', trial_key, 'token', 'started_at', 'pid')
    redis.call('XADD', events_key, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'requeued',
               'trial', n, 'attempt', attempt + 1, 'reason', reason)
    return 'requeued'
  end
  redis.call('HSET', trial_key, 'status', TRIAL.FAILED, 'error', reason, 'finished_at', t)
  redis.call('XADD', events_key, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'type', 'finished',
             'trial', n, 'attempt', attempt, 'status', TRIAL.FAILED)
  return TRIAL.FAILED
end
