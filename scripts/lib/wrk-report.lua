-- Appended to a wrk request script: when KV_WRK_REPORT names a file, writes the run's
-- totals and its latency distribution there as JSON, in microseconds at the same
-- percentiles `kv bench --output` reports (100 × (1 − 10^(−k/4)) for k = 0…20, then the
-- maximum), so the plot script draws both with one code path.
done = function(summary, latency, requests)
    local path = os.getenv("KV_WRK_REPORT")
    if not path then return end
    local points = {}
    for step = 0, 20 do
        local percentile = 100 * (1 - 10 ^ (-step / 4))
        points[#points + 1] = string.format('{"percentile":%.6f,"microseconds":%d}', percentile,
            latency:percentile(percentile))
    end
    points[#points + 1] = string.format('{"percentile":100,"microseconds":%d}', latency.max)
    local errors = summary.errors
    local file = assert(io.open(path, "w"))
    file:write(string.format('{"requests":%d,"seconds":%.3f,"errors":%d,"non_2xx":%d,"percentiles":[%s]}\n',
        summary.requests, summary.duration / 1e6, errors.connect + errors.read + errors.write + errors.timeout,
        errors.status, table.concat(points, ",")))
    file:close()
end
