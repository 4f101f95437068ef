-- Library, defined before every script (zoomtune/common/store_scripts.py): Redis's clock as "s.micros".
-- Scripts read the time from Redis (TIME), never from the caller, so clocks on workers do not
-- matter.
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
