#!/usr/bin/env python3
"""A minikeyvalue client session against a kv server's minikeyvalue listener.

Written the way users of minikeyvalue write their scripts: plain `requests` calls that
follow redirects, keys as URL paths. Every check prints what failed; the exit status is
the number of failures. Usage: minikeyvalue_client.py BASE_URL
"""
import concurrent.futures
import hashlib
import os
import sys
import urllib.parse

import requests

BASE = sys.argv[1].rstrip("/")
failures = []


def check(name, condition, detail=""):
    if not condition:
        failures.append(name)
        print(f"FAIL {name} {detail}", flush=True)


def fresh(label):
    return f"{BASE}/{label}-{os.urandom(6).hex()}"


# Create, read, delete.
url = fresh("basic")
check("put creates", requests.put(url, data=b"onyou").status_code == 201)
answer = requests.get(url)
check("get reads", answer.status_code == 200 and answer.content == b"onyou", answer.status_code)
check("no overwrite", requests.put(url, data=b"other").status_code == 403)
check("still the first value", requests.get(url).content == b"onyou")
check("delete", requests.delete(url).status_code == 204)
check("deleted reads 404", requests.get(url).status_code == 404)
check("second delete is not 204", requests.delete(url).status_code == 404)
check("put again after delete", requests.put(url, data=b"again").status_code == 201)
check("reads the new value", requests.get(url).content == b"again")

# Empty and missing bodies.
check("empty body is 411", requests.put(fresh("empty"), data=b"").status_code == 411)
check("missing key is 404", requests.get(fresh("missing")).status_code == 404)
head = requests.head(fresh("missing"))
check("HEAD of a missing key", head.status_code == 404 and head.headers.get("content-length") == "0")

# HEAD, Content-Md5, ranges.
url = fresh("hash")
body = url.encode()
requests.put(url, data=body)
head = requests.head(url)
check("HEAD status", head.status_code == 200)
check("HEAD length", head.headers.get("content-length") == str(len(body)), head.headers)
check("Content-Md5 is the hex MD5", head.headers.get("Content-Md5") == hashlib.md5(body).hexdigest(), head.headers)
ranged = requests.get(url, headers={"Range": "bytes=2-5"})
check("range", ranged.status_code == 206 and ranged.content == body[2:6], ranged.status_code)
short = fresh("short")
requests.put(short, data=b"onyou")
ranged = requests.get(short, headers={"Range": "bytes=2-50"})
check("range past the end is clamped", ranged.status_code == 206 and ranged.content == b"you")
check("range beyond the value", requests.get(short, headers={"Range": "bytes=10-"}).status_code == 416)

# A 16 MiB value and a 40 MiB one (kept in chunks), read back whole.
for size in (16 << 20, 40 << 20):
    url = fresh("large")
    data = os.urandom(size)
    check(f"put {size}", requests.put(url, data=data).status_code == 201)
    answer = requests.get(url)
    check(f"get {size}", answer.status_code == 200 and answer.content == data)
    check(f"md5 {size}", answer.headers.get("Content-Md5") == hashlib.md5(data).hexdigest())
    check(f"delete {size}", requests.delete(url).status_code == 204)

# Listing, with paging.
prefix = fresh("list")
names = []
for index in range(12):
    requests.put(f"{prefix}{index}", data=b"0")
    names.append(urllib.parse.urlparse(f"{prefix}{index}").path)
names.sort()
listing = requests.get(f"{prefix}?list")
check("list", listing.status_code == 200 and listing.json() == {"next": "", "keys": names}, listing.text)
check("list content type", listing.headers.get("Content-Type") == "application/json")
page = requests.get(f"{prefix}?list&limit=10").json()
check("first page", page == {"next": names[10], "keys": names[:10]}, page)
start = urllib.parse.quote_plus(page["next"])
page = requests.get(f"{prefix}?list&limit=10&start={start}").json()
check("last page", page == {"next": "", "keys": names[10:]}, page)
empty = requests.get(f"{fresh('nothing')}/DOES_NOT_EXIST?list")
check("empty list", empty.json() == {"next": "", "keys": []}, empty.text)
check("bad limit", requests.get(f"{prefix}?list&limit=ten").status_code == 400)
check("unknown query", requests.get(f"{prefix}?stats").status_code == 403)
check("query on PUT", requests.put(f"{prefix}?list", data=b"x").status_code == 403)

# Unlink: a virtual delete, listed until deleted.
url = fresh("unlink")
path = urllib.parse.urlparse(url).path
requests.put(url, data=b"soon gone")
check("unlink", requests.request("UNLINK", url).status_code == 204)
check("unlinked reads 404", requests.get(url).status_code == 404)
check("unlink twice", requests.request("UNLINK", url).status_code == 404)
check("not listed", path not in requests.get(f"{BASE}/?list").json()["keys"])
check("listed as unlinked", path in requests.get(f"{BASE}/?unlinked").json()["keys"])
check("delete an unlinked key", requests.delete(url).status_code == 204)
check("gone from unlinked", path not in requests.get(f"{BASE}/?unlinked").json()["keys"])

# Keys with characters that need escaping.
for name in ("with space", "ümlaut-ключ", "a%2Fb", "semi;colon", "quote\"d", "tag<&>"):
    url = f"{BASE}/special-{os.urandom(4).hex()}-" + urllib.parse.quote(name, safe="")
    key_path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    check(f"put {name!r}", requests.put(url, data=name.encode()).status_code == 201)
    answer = requests.get(url)
    check(f"get {name!r}", answer.status_code == 200 and answer.content == name.encode())
    listed = requests.get(url + "?list").json()["keys"]
    check(f"list {name!r}", listed == [key_path], listed)

# Concurrent creates of one key: exactly one wins, and its value stays.
url = fresh("race")
values = [f"writer-{index}".encode() for index in range(16)]
with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
    statuses = list(pool.map(lambda value: requests.put(url, data=value).status_code, values))
check("one create wins", statuses.count(201) == 1 and statuses.count(403) == 15, statuses)
winner = values[statuses.index(201)] if 201 in statuses else None
check("the winner's value", requests.get(url).content == winner)

# kvDB's variant: POST creates.
url = fresh("kvdb")
check("kvDB post creates", requests.post(url, data=b"examplevalue").status_code == 201)
check("kvDB get", requests.get(url).text == "examplevalue")
check("kvDB second create refused", requests.put(url, data=b"other").status_code == 403)
check("kvDB post refused too", requests.post(url, data=b"other").status_code == 403)
check("kvDB delete (minikeyvalue's 204)", requests.delete(url).status_code == 204)
check("kvDB read after delete", requests.get(url).status_code != 200)

# Many keys at once through one client.
urls = [fresh("many") for _ in range(50)]
with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
    statuses = list(pool.map(lambda u: requests.put(u, data=hashlib.md5(u.encode()).hexdigest()).status_code, urls))
check("50 creates", statuses == [201] * 50, statuses)
for u in urls:
    check("read " + u, requests.get(u).text == hashlib.md5(u.encode()).hexdigest())

print(f"{len(failures)} failures", flush=True)
sys.exit(len(failures))
