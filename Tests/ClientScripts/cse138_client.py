#!/usr/bin/env python3
"""A CSE138 key-value-store client session against a kv cluster's /kv-store/ routes.

Written the way that assignment's test scripts are: plain `requests` calls with JSON
bodies, the causal context of each answer passed into the next request, requests spread
over every node of the view. Every check prints what failed; the exit status is the
number of failures.

Usage: cse138_client.py VIEW NEW_NODE  (VIEW: the cluster's addresses, comma-separated;
NEW_NODE: a node started with a VIEW that includes it, not yet in the cluster's view)
"""
import concurrent.futures
import json
import os
import sys

import requests

VIEW = sys.argv[1].split(",")
NEW_NODE = sys.argv[2]
failures = []
TIMEOUT = 60


def check(name, condition, detail=""):
    if not condition:
        failures.append(name)
        print(f"FAIL {name} {detail}", flush=True)


def url(node, path):
    return f"http://{node}/kv-store/{path}"


def put(node, key, value, context):
    answer = requests.put(url(node, f"keys/{key}"), json={"value": value, "causal-context": context}, timeout=TIMEOUT)
    return answer.status_code, answer.json()


def get(node, key, context):
    answer = requests.get(url(node, f"keys/{key}"), json={"causal-context": context}, timeout=TIMEOUT)
    return answer.status_code, answer.json()


def delete(node, key, context):
    answer = requests.delete(url(node, f"keys/{key}"), json={"causal-context": context}, timeout=TIMEOUT)
    return answer.status_code, answer.json()


key = "x" + os.urandom(4).hex()
context = {}

# Add through one node, update through another, read through a third.
status, body = put(VIEW[0], key, "1", context)
check("add is 201", status == 201, (status, body))
check("add body", body.get("message") == "Added successfully" and body.get("replaced") is False, body)
check("add returns a context", isinstance(body.get("causal-context"), dict), body)
context = body["causal-context"]
status, body = put(VIEW[1], key, "2", context)
check("update is 200", status == 200, (status, body))
check("update body", body.get("message") == "Updated successfully" and body.get("replaced") is True, body)
context = body["causal-context"]
status, body = get(VIEW[2], key, context)
check("read your write on another node", status == 200 and body.get("value") == "2", (status, body))
check("read body", body.get("message") == "Retrieved successfully" and body.get("doesExist") is True, body)
context = body["causal-context"]

# Causal order across nodes and clients: a second client that saw the first one's
# write (through its context) and writes a dependent key.
other = "y" + os.urandom(4).hex()
status, body = put(VIEW[3 % len(VIEW)], other, "depends-on-2", context)
check("dependent write", status == 201, (status, body))
second_context = body["causal-context"]
for node in VIEW:
    status, body = get(node, key, second_context)
    check(f"dependency visible at {node}", status == 200 and body.get("value") == "2", (status, body))

# Missing keys and deletes.
status, body = get(VIEW[0], "missing" + os.urandom(4).hex(), context)
check("missing is 404", status == 404, (status, body))
check("missing body", body == {"message": "Error in GET", "error": "Key does not exist", "doesExist": False,
                               "causal-context": body.get("causal-context")}, body)
status, body = delete(VIEW[1], key, context)
check("delete is 200", status == 200 and body.get("message") == "Deleted successfully" and body.get("doesExist") is True,
      (status, body))
context = body["causal-context"]
status, body = get(VIEW[2], key, context)
check("deleted reads 404 elsewhere", status == 404, (status, body))
status, body = delete(VIEW[0], key, context)
check("second delete is 404", status == 404 and body.get("message") == "Error in DELETE", (status, body))

# Bad input.
status, body = put(VIEW[0], "k" * 51, "v", {})
check("long key", status == 400 and body == {"message": "Error in PUT", "error": "Key is too long",
                                             "causal-context": None}, (status, body))
answer = requests.put(url(VIEW[0], f"keys/{key}"), json={"causal-context": {}}, timeout=TIMEOUT)
check("missing value", answer.status_code == 400 and answer.json().get("error") == "Value is missing",
      (answer.status_code, answer.text))
answer = requests.put(url(VIEW[0], f"keys/{key}"), data=b"{not json", timeout=TIMEOUT)
check("malformed body", answer.status_code == 400 and answer.json().get("error") == "Failed to parse request body",
      (answer.status_code, answer.text))

# Many keys through every node at once, then the counts.
keys = [f"k{index}-{os.urandom(3).hex()}" for index in range(60)]
with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
    statuses = list(pool.map(lambda pair: put(VIEW[pair[0] % len(VIEW)], pair[1], pair[1], {})[0], enumerate(keys)))
check("60 adds", statuses == [201] * 60, statuses)
answer = requests.get(url(VIEW[0], "shards"), timeout=TIMEOUT).json()
check("shards", answer.get("message") == "Shard membership retrieved successfully"
      and answer.get("shards") == list(range(1, len(VIEW) // 2 + 1)), answer)
total = 0
members = []
for shard in answer.get("shards", []):
    info = requests.get(url(VIEW[1], f"shards/{shard}"), timeout=TIMEOUT).json()
    check(f"shard {shard}", info.get("message") == "Shard information retrieved successfully"
          and info.get("shard-id") == shard and len(info.get("replicas", [])) == 2, info)
    total += info.get("key-count", 0)
    members += info.get("replicas", [])
check("shard key counts add up", total == 61, total)
check("every node in one shard", sorted(members) == sorted(VIEW), members)
counts = [requests.get(url(node, "key-count"), timeout=TIMEOUT).json() for node in VIEW]
check("key-count", all(c.get("message") == "Key count retrieved successfully" for c in counts), counts)
check("key-count per shard", sum(c.get("key-count", 0) for c in counts) == 2 * 61, counts)
check("unknown shard", requests.get(url(VIEW[0], "shards/99"), timeout=TIMEOUT).status_code == 404)

# A view change adds the new node; every key stays readable through it.
new_view = VIEW + [NEW_NODE]
answer = requests.put(url(VIEW[0], "view-change"), json={"view": new_view, "repl-factor": 2}, timeout=300)
body = answer.json()
check("view change", answer.status_code == 200 and body.get("message") == "View change successful", (answer.status_code, body))
check("view change shards", sum(s.get("key-count", 0) for s in body.get("shards", [])) == 61
      and sorted(r for s in body.get("shards", []) for r in s.get("replicas", [])) == sorted(new_view), body)
for k in keys:
    status, answer = get(NEW_NODE, k, {})
    check(f"read {k} through the new node", status == 200 and answer.get("value") == k, (status, answer))
answer = requests.put(url(VIEW[0], "view-change"), json={"view": new_view, "repl-factor": 3}, timeout=TIMEOUT)
check("replication factor is fixed", answer.status_code == 400, answer.text)

print(f"{len(failures)} failures", flush=True)
sys.exit(len(failures))
