"""Summarizes the samples of scripts/soak-memory.sh: for each five minutes of the run,
each node's resident set (lowest and highest sample: it rises and falls with the
memtables) and what is left of it without the engine's memory, then whether the
resident set levelled off (its peak over the last third of the run against its peak
before)."""

import csv
import sys

with open(sys.argv[1]) as file:
    rows = list(csv.DictReader(file))


def mib(value):
    return float(value or 0) / 1048576


def engine(row):
    return sum(mib(row[part]) for part in ["memtables_bytes", "block_cache_bytes", "table_readers_bytes"])


nodes = sorted({row["node"] for row in rows})
end = max(int(row["seconds"]) for row in rows)
print("MiB per five minutes: resident set lowest-highest / the rest without RocksDB's memory lowest-highest")
print("  minutes  " + "  ".join(f"{node:>22}" for node in nodes))
for start in range(0, end + 1, 300):
    cells = []
    for node in nodes:
        window = [row for row in rows if row["node"] == node and start <= int(row["seconds"]) < start + 300]
        if not window:
            continue
        resident = [mib(row["rss_bytes"]) for row in window]
        rest = [mib(row["rss_bytes"]) - engine(row) for row in window]
        cells.append(f"{min(resident):.0f}-{max(resident):.0f} / {min(rest):.0f}-{max(rest):.0f}")
    if cells:
        print(f"  {start // 60:>2}-{min(end, start + 300) // 60:<4} " + "  ".join(f"{cell:>22}" for cell in cells))
for node in nodes:
    series = [(int(row["seconds"]), mib(row["rss_bytes"])) for row in rows if row["node"] == node]
    before = max(value for seconds, value in series if seconds <= 2 * end / 3)
    peak = max(value for _, value in series)
    verdict = "levelled off" if peak - before <= max(8, 0.05 * before) else "still growing"
    print(
        f"  {node}: peak {before:.0f} MiB in the first two thirds, {peak:.0f} MiB over the run: "
        f"{verdict} ({peak - before:+.0f} MiB in the last third)"
    )
