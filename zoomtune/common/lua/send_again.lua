-- Library, defined before every script (after requeue_or_fail.lua): speculation sends a trial
-- of a round run ahead again, as its next attempt with `params` and `rungs`. Its running
-- attempt, if any, loses the trial (lease, token and running entry go, so its heartbeat,
-- reports and result are refused); its result and reports are dropped. `revisions` is set to
-- the attempt it ended: runs under other params or rungs are not runs of this one, so
-- max_attempts counts from here (requeue_or_fail.lua subtracts it).
local function send_again(trial_key, lease_key, reports_key, running_key, counters_key, n,
                          params, rungs)
  local attempt = tonumber(redis.call('HGET', trial_key, 'attempt') or '1')
  redis.call('DEL', lease_key, reports_key)
  redis.call('SREM', running_key, n)
  redis.call('HDEL', trial_key, 'token', 'worker', 'host', 'device', 'pid', 'started_at',
             'finished_at', 'score', 'error', 'last_step', 'last_value', 'last_error', 'rejudge')
  redis.call('HSET', trial_key, 'params', params, 'rungs', rungs, 'status', TRIAL.QUEUED,
             'attempt', attempt + 1, 'queued_at', now())
  redis.call('HSET', trial_key, 'revisions', attempt)
  redis.call('HINCRBY', counters_key, 'revised_trials', 1)
end
