#!/usr/bin/env python3
"""A Redis client session (redis-py) against the RESP listeners of a kv cluster.

Every command the listener serves, pipelining, binary values, a 1 MiB value, Redis's
errors, RESP2 and RESP3, expiry seen through every node, concurrent increments and
concurrent SETs through different nodes. Every check prints what failed; the exit
status is the number of failures. Usage: redis_client.py PORT [PORT...]
"""
import concurrent.futures
import os
import sys
import time

import redis

PORTS = [int(port) for port in sys.argv[1:]]
failures = []


def check(name, condition, detail=""):
    if not condition:
        failures.append(name)
        print(f"FAIL {name} {detail!r}", flush=True)


def client(index=0, protocol=2, db=0):
    return redis.Redis(host="127.0.0.1", port=PORTS[index % len(PORTS)], protocol=protocol, db=db)


def error_text(call):
    try:
        call()
    except redis.ResponseError as error:
        return str(error)
    return None


def fresh(label):
    return f"{label}:{os.urandom(6).hex()}"


for protocol in (2, 3):
    r = client(0, protocol)
    label = f"resp{protocol}"
    # Connection.
    check(f"{label} ping", r.ping() is True)
    check(f"{label} echo", r.echo(b"hi\r\n") == b"hi\r\n")
    check(f"{label} client id", isinstance(r.client_id(), int))
    r.client_setname("session")
    check(f"{label} client name", r.client_getname() in ("session", b"session"))
    info = r.info()
    check(f"{label} info", info.get("redis_version") == "7.2.0", info)
    check(f"{label} command count", r.command_count() >= 40)

    # Strings.
    key = fresh("s")
    check(f"{label} set", r.set(key, "v1") is True)
    check(f"{label} get", r.get(key) == b"v1")
    check(f"{label} set nx refused", r.set(key, "v2", nx=True) is None)
    check(f"{label} set xx", r.set(key, "v2", xx=True) is True and r.get(key) == b"v2")
    check(f"{label} set xx absent", r.set(fresh("absent"), "x", xx=True) is None)
    check(f"{label} set get", r.set(key, "v3", get=True) == b"v2" and r.get(key) == b"v3")
    check(f"{label} getset", r.getset(key, "v4") == b"v3")
    check(f"{label} setnx", r.setnx(key, "no") is False and r.setnx(fresh("nx"), "yes") is True)
    check(f"{label} strlen", r.strlen(key) == 2 and r.strlen(fresh("none")) == 0)
    check(f"{label} append", r.append(key, "-more") == 7 and r.get(key) == b"v4-more")
    check(f"{label} getrange", r.getrange(key, 0, 1) == b"v4" and r.getrange(key, -4, -1) == b"more")
    check(f"{label} getrange out of range", r.getrange(key, 10, 20) == b"")
    check(f"{label} setrange", r.setrange(key, 1, "X") == 7 and r.get(key) == b"vX-more")
    padded = fresh("pad")
    check(f"{label} setrange pads with zeros", r.setrange(padded, 3, "a") == 4 and r.get(padded) == b"\x00\x00\x00a")
    check(f"{label} getdel", r.getdel(key) == b"vX-more" and r.get(key) is None)
    many = {fresh("m"): f"value{i}" for i in range(5)}
    check(f"{label} mset", r.mset(many) is True)
    check(f"{label} mget", r.mget(list(many) + [fresh("missing")]) == [v.encode() for v in many.values()] + [None])
    check(f"{label} msetnx refused", r.msetnx({list(many)[0]: "x", fresh("n"): "y"}) is False)
    check(f"{label} msetnx", r.msetnx({fresh("n"): "y", fresh("n"): "z"}) is True)

    # Counters.
    counter = fresh("c")
    check(f"{label} incr", r.incr(counter) == 1 and r.incrby(counter, 10) == 11)
    check(f"{label} decr", r.decr(counter) == 10 and r.decrby(counter, 4) == 6)
    check(f"{label} counter reads as text", r.get(counter) == b"6")
    r.set(counter, "41")
    check(f"{label} incr of a set value", r.incr(counter) == 42)
    floating = fresh("f")
    r.set(floating, "10.50")
    check(f"{label} incrbyfloat", r.incrbyfloat(floating, 0.1) == 10.6)
    check(f"{label} incrbyfloat of an integer", r.incrbyfloat(counter, 0.5) == 42.5)
    r.set(counter, str(2**63 - 1))
    check(f"{label} overflow", error_text(lambda: r.incr(counter)) == "increment or decrement would overflow")
    word = fresh("w")
    r.set(word, "ten")
    check(f"{label} incr of text", error_text(lambda: r.incr(word)) == "value is not an integer or out of range")
    check(f"{label} incrbyfloat of text", error_text(lambda: r.incrbyfloat(word, 1)) == "value is not a valid float")

    # Keys and expiry.
    key = fresh("k")
    r.set(key, "v")
    check(f"{label} exists", r.exists(key, key, fresh("no")) == 2)
    check(f"{label} type", r.type(key) in (b"string", "string") and r.type(fresh("no")) in (b"none", "none"))
    check(f"{label} ttl without expiry", r.ttl(key) == -1 and r.ttl(fresh("no")) == -2)
    check(f"{label} expire", r.expire(key, 100) is True and 98 <= r.ttl(key) <= 100)
    check(f"{label} pttl", 95_000 <= r.pttl(key) <= 100_000)
    check(f"{label} expire nx refused", r.expire(key, 50, nx=True) is False)
    check(f"{label} expire gt refused", r.expire(key, 50, gt=True) is False)
    check(f"{label} expire lt", r.expire(key, 50, lt=True) is True and r.ttl(key) <= 50)
    check(f"{label} persist", r.persist(key) is True and r.ttl(key) == -1 and r.persist(key) is False)
    check(f"{label} pexpireat", r.pexpireat(key, int(time.time() * 1000) + 60_000) is True and r.ttl(key) > 50)
    check(f"{label} set keepttl", r.set(key, "w", keepttl=True) is True and r.ttl(key) > 50)
    check(f"{label} set clears ttl", r.set(key, "w") is True and r.ttl(key) == -1)
    check(f"{label} set ex", r.set(key, "w", ex=30) is True and 28 <= r.ttl(key) <= 30)
    r.set(counter, "5")
    r.expire(counter, 100)
    check(f"{label} incr keeps ttl", r.incr(counter) == 6 and r.ttl(counter) > 90)
    check(f"{label} expire in the past deletes", r.expire(key, -1) is True and r.exists(key) == 0)
    check(f"{label} del", r.delete(counter, fresh("no")) == 1 and r.get(counter) is None)
    check(f"{label} unlink", r.unlink(floating, floating) == 1)

    # Binary values and a large one.
    binary = bytes(range(256)) + b"\r\n\x00end"
    bkey = fresh("b").encode() + b"\x00\r\n\xff"
    r.set(bkey, binary)
    check(f"{label} binary key and value", r.get(bkey) == binary)
    large = os.urandom(1 << 20)
    check(f"{label} 1 MiB value", r.set(fresh("l"), large) is True)
    lkey = fresh("l")
    r.set(lkey, large)
    check(f"{label} 1 MiB value reads back", r.get(lkey) == large)

    # Pipelining: many commands in flight on one connection, answered in order.
    pipe = r.pipeline(transaction=False)
    keys = [fresh("p") for _ in range(200)]
    for index, k in enumerate(keys):
        pipe.set(k, index)
        pipe.get(k)
    pipe.incr(keys[0])
    replies = pipe.execute()
    expected = []
    for index in range(len(keys)):
        expected += [True, str(index).encode()]
    check(f"{label} pipeline", replies == expected + [1], replies[:6])

    # Errors, with Redis's texts.
    check(f"{label} unknown command", error_text(lambda: r.execute_command("NOSUCH", "a")) ==
          "unknown command 'NOSUCH', with args beginning with: 'a' ")
    check(f"{label} wrong arity", error_text(lambda: r.execute_command("GET")) ==
          "wrong number of arguments for 'get' command")
    check(f"{label} syntax", error_text(lambda: r.execute_command("SET", "k", "v", "BOGUS")) == "syntax error")
    check(f"{label} invalid expire", error_text(lambda: r.execute_command("SET", "k", "v", "EX", "0")) ==
          "invalid expire time in 'set' command")
    check(f"{label} select out of range", error_text(lambda: r.execute_command("SELECT", "99")) ==
          "DB index is out of range")

# Databases: SELECT maps to another table, FLUSHDB empties only it, SCAN and KEYS.
db5 = client(1, 2, db=5)
db5.flushdb()
names = [f"scan:{i:03d}" for i in range(120)]
db5.mset({name: "x" for name in names})
db5.set("other", "y")
check("dbsize", db5.dbsize() == 121)
check("keys", sorted(db5.keys("scan:*")) == [n.encode() for n in names])
seen = set()
cursor = 0
while True:
    cursor, batch = db5.scan(cursor, match="scan:*", count=17)
    seen.update(batch)
    if cursor == 0:
        break
check("scan visits every key", seen == {n.encode() for n in names}, len(seen))
check("scan_iter", len(list(db5.scan_iter(count=50))) == 121)
check("another database is separate", client(1, 2, db=6).get("other") is None)
check("flushdb", db5.flushdb() is True and db5.dbsize() == 0)

# Expiry through every node.
key = fresh("e")
client(0).set(key, "short", px=1500)
check("ttl through every node", all(client(i).pttl(key) > 0 for i in range(len(PORTS))))
time.sleep(2)
check("expired through every node", all(client(i).get(key) is None for i in range(len(PORTS))))
check("expired key does not exist", all(client(i).exists(key) == 0 for i in range(len(PORTS))))

# Concurrent increments through different nodes merge.
counter = fresh("cc")
client(0).set(counter, "1000")


def increments(index):
    connection = client(index)
    for _ in range(100):
        connection.incr(counter)


with concurrent.futures.ThreadPoolExecutor(max_workers=len(PORTS)) as pool:
    list(pool.map(increments, range(len(PORTS))))
values = {client(i).get(counter) for i in range(len(PORTS))}
check("concurrent increments all count", values == {str(1000 + 100 * len(PORTS)).encode()}, values)

# Concurrent SETs through different nodes converge to one value everywhere.
contested = fresh("lww")


def sets(index):
    connection = client(index)
    for round in range(50):
        connection.set(contested, f"node{index}-{round}")


with concurrent.futures.ThreadPoolExecutor(max_workers=len(PORTS)) as pool:
    list(pool.map(sets, range(len(PORTS))))
deadline = time.time() + 10
while time.time() < deadline:
    values = {client(i).get(contested) for i in range(len(PORTS))}
    if len(values) == 1:
        break
    time.sleep(0.2)
check("concurrent sets converge to one value", len(values) == 1 and None not in values, values)

print(f"{len(failures)} failures", flush=True)
sys.exit(len(failures))
