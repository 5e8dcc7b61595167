-- wrk script: every request a URL never requested before, the request
-- URL's path with a query string "?n=<run>-<thread>-<counter>":
-- a cache sees a miss every time.
--
--   wrk -s bench/wrk/unique-urls.lua http://127.0.0.1:8080/1k
--
-- <run> is the start time in seconds: the warm-up lasts at least a
-- second, so the measured run does not meet the entries it stored.

local threads = 0

function setup(thread)
    threads = threads + 1
    thread:set("id", threads)
end

local prefix
local counter = 0

function init(args)
    prefix = wrk.path .. "?n=" .. os.time() .. "-" .. (id or 0) .. "-"
end

function request()
    counter = counter + 1
    return wrk.format(nil, prefix .. counter)
end
