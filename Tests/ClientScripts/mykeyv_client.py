#!/usr/bin/env python3
"""A Mykeyv client session against kv nodes' Mykeyv listeners.

It speaks Mykeyv's wire protocol as its Perl client did: each message a version byte
(0), a 4-byte little-endian length and a JSON object; requests carry a request_id and
answers are matched by it, in whatever order they come. Every check prints what failed;
the exit status is the number of failures.

Usage: mykeyv_client.py HOST:PORT HOST:PORT  (two nodes of one cluster)
"""
import json
import os
import socket
import struct
import sys

NODES = [(address.split(":")[0], int(address.split(":")[1])) for address in sys.argv[1:3]]
failures = []


def check(name, condition, detail=""):
    if not condition:
        failures.append(name)
        print(f"FAIL {name} {detail}", flush=True)


class Connection:
    def __init__(self, node):
        self.socket = socket.create_connection(node, timeout=60)
        self.buffer = b""

    def send_raw(self, data):
        self.socket.sendall(data)

    def send(self, message):
        payload = json.dumps(message).encode()
        self.send_raw(struct.pack("<BI", 0, len(payload)) + payload)

    def receive(self):
        """The next answer, or None when the server closed the connection."""
        while True:
            if len(self.buffer) >= 5:
                version, length = struct.unpack("<BI", self.buffer[:5])
                if len(self.buffer) >= 5 + length:
                    payload = self.buffer[5:5 + length]
                    self.buffer = self.buffer[5 + length:]
                    check("answer version is 0", version == 0, version)
                    return json.loads(payload)
            chunk = self.socket.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk

    def call(self, message):
        self.send(message)
        return self.receive()

    def close(self):
        self.socket.close()


a = Connection(NODES[0])
b = Connection(NODES[1])
key = "bonham-" + os.urandom(4).hex()
record = {"first": "John", "last": "Bonham", "band": "Zeppelin", "albums": ["Houses of the Holy", "IV"], "year": 1948}

# The README's session: set, then get through another node.
answer = a.call({"command": "set", "key": key, "data": record, "request_id": 1})
check("set_ok", answer == {"command": "set_ok", "key": key, "data": None, "request_id": 1}, answer)
answer = b.call({"command": "get", "key": key, "request_id": "two"})
check("get_ok through another node", answer == {"command": "get_ok", "key": key, "data": record, "request_id": "two"},
      answer)
answer = b.call({"command": "get", "key": "missing-" + key, "request_id": 3})
check("missing key reads null", answer.get("command") == "get_ok" and answer.get("data") is None, answer)

# Many requests in flight on one connection; answers matched by request_id.
keys = [f"{key}-{index}" for index in range(300)]
for index, name in enumerate(keys):
    a.send({"command": "set", "key": name, "data": {"n": index}, "request_id": 1000 + index})
answers = [a.receive() for _ in keys]
check("300 pipelined sets", sorted(x["request_id"] for x in answers) == list(range(1000, 1300))
      and all(x["command"] == "set_ok" for x in answers), answers[:3])
for index, name in enumerate(keys):
    b.send({"command": "get", "key": name, "request_id": 2000 + index})
answers = {x["request_id"]: x for x in (b.receive() for _ in keys)}
check("300 pipelined gets", all(answers.get(2000 + i, {}).get("data") == {"n": i} for i in range(300)))

# Answers come in any order: small gets sent behind the set of an 8 MiB record (parsed,
# replicated and synced on two replicas before its answer) overtake it.
big = {"blob": "x" * (8 << 20)}
a.send({"command": "set", "key": key + "-big", "data": big, "request_id": "big"})
for index in range(20):
    a.send({"command": "get", "key": keys[index], "request_id": 5000 + index})
order = [a.receive()["request_id"] for _ in range(21)]
check("a get overtakes the big set", order.index("big") > 0, order[:5])
check("the big record reads back", b.call({"command": "get", "key": key + "-big", "request_id": 6})
      .get("data") == big)
answer = b.call({"command": "list", "request_id": 7})
listed = answer.get("data", [])
check("list_ok names every key", answer.get("command") == "list_ok" and set(keys + [key]) <= set(listed),
      len(listed))

# delete, rehash.
answer = a.call({"command": "delete", "key": key, "request_id": 8})
check("delete_ok", answer == {"command": "delete_ok", "key": key, "data": None, "request_id": 8}, answer)
check("deleted reads null", b.call({"command": "get", "key": key, "request_id": 9}).get("data") is None)
answer = a.call({"command": "rehash", "request_id": 10})
check("rehash_ok", answer == {"command": "rehash_ok", "request_id": 10}, answer)

# Code is never evaluated.
answer = a.call({"command": "evaluate", "code": "system('touch /tmp/pwned'); return 1;", "request_id": 11})
check("Perl is refused", answer.get("command") == "evaluate_error" and answer.get("code") == "request.unsupported"
      and answer.get("request_id") == 11, answer)
answer = a.call({"command": "apply", "code_id": 1, "key": keys[0], "args": [1], "request_id": 12})
check("apply without a function is refused", answer.get("command") == "apply_error"
      and answer.get("code") == "request.invalid" and answer.get("request_id") == 12, answer)

# evaluate and apply take a WebAssembly module: sent with the request, or registered.
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "functions")
with open(os.path.join(EXAMPLES, "append-to-list.wat")) as source:
    APPEND = source.read()
answer = a.call({"command": "apply", "key": "fn-list", "module": APPEND, "args": "milk", "request_id": 40})
check("apply a module", answer == {"command": "apply_ok", "key": "fn-list", "data": ["milk"], "request_id": 40},
      answer)
answer = b.call({"command": "apply", "key": "fn-list", "module": APPEND, "args": {"n": 2}, "request_id": 41})
check("apply through another node", answer.get("data") == ["milk", {"n": 2}], answer)
answer = b.call({"command": "evaluate", "key": "fn-list", "module": APPEND, "args": 3, "request_id": 42})
check("evaluate answers without storing", answer == {"command": "evaluate_ok", "key": "fn-list",
      "data": ["milk", {"n": 2}, 3], "request_id": 42}, answer)
check("evaluate stored nothing", a.call({"command": "get", "key": "fn-list", "request_id": 43}).get("data")
      == ["milk", {"n": 2}])
answer = a.call({"command": "apply", "key": "fn-list", "function": "not-registered", "request_id": 44})
check("an unknown function", answer.get("command") == "apply_error" and answer.get("code") == "function.not_found",
      answer)
LOOP = """(module (memory (export "memory") 1 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 0))
  (func (export "update") (param i32 i32 i32 i32) (result i32 i32 i32) (loop $l (br $l)) (unreachable)))"""
answer = a.call({"command": "apply", "key": "fn-list", "module": LOOP, "request_id": 45})
check("a loop runs out of fuel", answer.get("command") == "apply_error"
      and answer.get("code") == "function.limit_exceeded", answer)
IMPORTS = LOOP.replace("(module", '(module (import "env" "system" (func (param i32)))')
answer = a.call({"command": "evaluate", "key": "fn-list", "module": IMPORTS, "request_id": 46})
check("an import is refused", answer.get("command") == "evaluate_error"
      and answer.get("code") == "function.invalid", answer)
check("the list is intact", b.call({"command": "get", "key": "fn-list", "request_id": 47}).get("data")
      == ["milk", {"n": 2}])

# Bad input: answered, and the connection goes on where the framing allows it.
answer = a.call({"command": "frobnicate", "request_id": 13})
check("unknown command", answer.get("command") == "frobnicate_error" and "unknown command" in answer.get("error", ""),
      answer)
answer = a.call({"command": "set", "data": 1, "request_id": 14})
check("set without key", answer.get("command") == "set_error" and answer.get("code") == "request.invalid", answer)
payload = b"{not json"
a.send_raw(struct.pack("<BI", 0, len(payload)) + payload)
answer = a.receive()
check("malformed JSON", answer.get("command") == "error" and answer.get("request_id") is None, answer)
check("still serving after malformed JSON", a.call({"command": "get", "key": keys[1], "request_id": 15}).get("data")
      == {"n": 1})
# A frame of another version loses the framing: an error, then the connection closes.
c = Connection(NODES[0])
c.send_raw(struct.pack("<BI", 7, 2) + b"{}")
answer = c.receive()
check("wrong version", answer is not None and answer.get("command") == "error" and "version" in answer.get("error", ""),
      answer)
check("closed after wrong version", c.receive() is None)
# A length over the limit is refused before its bytes are read.
d = Connection(NODES[1])
d.send_raw(struct.pack("<BI", 0, 0xFFFFFFF0))
answer = d.receive()
check("length over the limit", answer is not None and "over the limit" in answer.get("error", ""), answer)
check("closed after the long length", d.receive() is None)
# A truncated frame followed by the peer hanging up does no harm.
e = Connection(NODES[1])
e.send_raw(struct.pack("<BI", 0, 100) + b"{\"command\"")
e.close()
check("still serving", b.call({"command": "get", "key": keys[2], "request_id": 16}).get("data") == {"n": 2})

print(f"{len(failures)} failures", flush=True)
sys.exit(len(failures))
