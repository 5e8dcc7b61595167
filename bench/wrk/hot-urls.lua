-- wrk script: cycle through N URLs, the request URL's path followed by
-- 0 .. N-1 (http://host/1k/ -> /1k/0, /1k/1, ... /1k/999).
--
--   wrk -s bench/wrk/hot-urls.lua http://127.0.0.1:8080/1k/ 1000
--
-- The requests are formatted once, in init(); request() only hands the
-- next one out, so that wrk's own cost per request stays close to a plain
-- run's (the baseline of a scenario using this script uses it too).

local requests = {}
local count = 0
local next_one = 0

function init(args)
    count = tonumber(args[1]) or 1000
    for i = 0, count - 1 do
        requests[i] = wrk.format(nil, wrk.path .. i)
    end
end

function request()
    local req = requests[next_one]
    next_one = (next_one + 1) % count
    return req
end
