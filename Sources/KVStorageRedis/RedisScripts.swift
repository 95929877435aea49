/// The Lua scripts of the Redis engine. Each runs atomically in the server. Keys are
/// built from the engine's prefix inside the scripts, which a single (non-cluster)
/// server allows.
enum RedisScripts {
    /// ARGV: prefix, then groups of four: op (`p` put, `d` delete, `r` range delete),
    /// keyspace number, key (or lex lower bound), value (or lex upper bound).
    static let write = """
        local prefix = ARGV[1]
        local i = 2
        while i <= #ARGV do
          local op, ks = ARGV[i], ARGV[i + 1]
          local z, h = prefix .. ':' .. ks .. ':z', prefix .. ':' .. ks .. ':h'
          if op == 'p' then
            redis.call('ZADD', z, 0, ARGV[i + 2])
            redis.call('HSET', h, ARGV[i + 2], ARGV[i + 3])
          elseif op == 'd' then
            redis.call('ZREM', z, ARGV[i + 2])
            redis.call('HDEL', h, ARGV[i + 2])
          else
            while true do
              local keys = redis.call('ZRANGE', z, ARGV[i + 2], ARGV[i + 3], 'BYLEX', 'LIMIT', 0, 1000)
              if #keys == 0 then break end
              redis.call('HDEL', h, unpack(keys))
              redis.call('ZREM', z, unpack(keys))
            end
          end
          i = i + 4
        end
        return 1
        """

    /// KEYS: sorted set, hash. ARGV: lex lower bound, lex upper bound, limit, `1` for
    /// descending order. Returns key, value, key, value….
    static let page = """
        local keys
        if ARGV[4] == '1' then
          keys = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[1], 'BYLEX', 'REV', 'LIMIT', 0, ARGV[3])
        else
          keys = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYLEX', 'LIMIT', 0, ARGV[3])
        end
        if #keys == 0 then return {} end
        local values = redis.call('HMGET', KEYS[2], unpack(keys))
        local out = {}
        for i = 1, #keys do
          out[2 * i - 1] = keys[i]
          out[2 * i] = values[i]
        end
        return out
        """

    /// ARGV: groups of four names: sorted set, its copy, hash, its copy.
    static let copyAll = """
        for i = 1, #ARGV, 4 do
          if redis.call('EXISTS', ARGV[i]) == 1 then redis.call('COPY', ARGV[i], ARGV[i + 1]) end
          if redis.call('EXISTS', ARGV[i + 2]) == 1 then redis.call('COPY', ARGV[i + 2], ARGV[i + 3]) end
        end
        return 1
        """

    /// ARGV: sorted set, hash, lex lower bound, lex upper bound, the copies' names.
    static let copyRange = """
        local offset = 0
        while true do
          local keys = redis.call('ZRANGE', ARGV[1], ARGV[3], ARGV[4], 'BYLEX', 'LIMIT', offset, 1000)
          if #keys == 0 then break end
          local values = redis.call('HMGET', ARGV[2], unpack(keys))
          local members, pairs = {}, {}
          for i = 1, #keys do
            members[2 * i - 1] = 0
            members[2 * i] = keys[i]
            pairs[2 * i - 1] = keys[i]
            pairs[2 * i] = values[i]
          end
          redis.call('ZADD', ARGV[5], unpack(members))
          redis.call('HSET', ARGV[6], unpack(pairs))
          offset = offset + #keys
        end
        return offset
        """

    /// ARGV: sorted set, hash, lex bounds. Counts the keys exactly and sums the sizes of
    /// up to 64 of them to extrapolate the bytes.
    static let estimate = """
        local count = redis.call('ZLEXCOUNT', ARGV[1], ARGV[3], ARGV[4])
        if count == 0 then return {0, 0} end
        local sample = redis.call('ZRANGE', ARGV[1], ARGV[3], ARGV[4], 'BYLEX', 'LIMIT', 0, 64)
        local bytes = 0
        for i = 1, #sample do
          bytes = bytes + #sample[i] + redis.call('HSTRLEN', ARGV[2], sample[i])
        end
        return {count, math.floor(bytes * count / #sample)}
        """
}
