-- wrk script shared by the benchmarks: each request writes a fresh key of the
-- bench/fresh table with a 256-byte value. Headers given to wrk with -H (a token) are
-- sent too.
local counter = 0
local value = string.rep("v", 256)
function setup(thread) thread:set("id", tostring(math.random(1, 1e9))) end
request = function()
    counter = counter + 1
    local headers = {["content-type"] = "application/octet-stream"}
    for name, header in pairs(wrk.headers) do headers[name] = headers[name] or header end
    return wrk.format("PUT", "/v1/bench/fresh/" .. id .. "-" .. counter, headers, value)
end
