"""Writes a gnuplot program, on standard output, that draws the benchmarks' pictures.

Input: the JSON files that ./scripts/bench-cluster.sh and ./scripts/bench-handoff.sh
leave in a directory when KV_BENCH_JSON names it. Used by scripts/plot-benchmarks.sh.
"""

import json
import os
import sys

source, target = sys.argv[1], sys.argv[2]


def load(name):
    path = os.path.join(source, name)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def block(name, rows):
    """A gnuplot data block: one row of numbers per line."""
    lines = [f"${name} << EOD"] + [" ".join(str(value) for value in row) for row in rows] + ["EOD"]
    return "\n".join(lines)


def distribution(points):
    """(1 / (1 − p), milliseconds) for every percentile below 100: the HDR plot's axes."""
    return [
        (1 / (1 - point["percentile"] / 100), point["microseconds"] / 1000)
        for point in points
        if point["percentile"] < 100
    ]


program = []
series = []
wrk_kv, wrk_etcd = load("wrk-kv.json"), load("wrk-etcd.json")
bench_puts, bench_gets = load("kv-bench-0.json"), load("kv-bench-1.json")
for name, report, title in [
    ("wrkkv", wrk_kv, "kv, 3 nodes, wrk puts"),
    ("wrketcd", wrk_etcd, "etcd, 3 members, wrk puts"),
]:
    if report:
        rate = report["requests"] / report["seconds"]
        program.append(block(name, distribution(report["percentiles"])))
        series.append(f"${name} using 1:2 with linespoints title '{title} ({rate:,.0f}/s)'")
for name, report, kind, title in [
    ("benchputs", bench_puts, "puts", "kv bench, puts only"),
    ("benchgets", bench_gets, "gets", "kv bench, gets only (R=2)"),
]:
    if report:
        summary = report[kind]
        program.append(block(name, distribution(summary["percentiles"])))
        series.append(f"${name} using 1:2 with linespoints title '{title} ({summary['per_second']:,.0f}/s)'")
if series:
    program.append(f"""
reset
set terminal pngcairo size 960,560 font ',10'
set output '{target}/cluster-latency.png'
set title 'Latency by percentile, 3-node clusters on one 2-core machine (100 connections, 256-byte values)'
set logscale x
set xrange [1:100000]
set xtics ('0%%' 1, '90%%' 10, '99%%' 100, '99.9%%' 1000, '99.99%%' 10000, '99.999%%' 100000)
set xlabel 'percentile'
set ylabel 'latency, ms'
set grid
set key top left
plot {', '.join(series)}
""")

limits = ["default", "4MiB", "none"]
colors = {"default": "#1f77b4", "4MiB": "#2ca02c", "none": "#d62728"}
throughput, latency, levels, windows = [], [], [], []
for limit in limits:
    during, before, handoff = (
        load(f"handoff-{limit}-during.json"),
        load(f"handoff-{limit}-before.json"),
        load(f"handoff-{limit}.json"),
    )
    if not during or not handoff:
        continue
    name = "h" + limit.lower().replace("mib", "m")
    # Whole seconds only: the last one of a run is cut short.
    timeline = [entry for entry in during["timeline"] if entry["second"] < int(during["seconds"])]
    program.append(
        block(name, [(entry["second"] + 0.5, entry["operations"], entry["p99"] / 1000) for entry in timeline])
    )
    windows.append(timeline)
    label = f"limit {limit}: {handoff['bytes'] // 1048576:,} MiB in {float(handoff['seconds']):.1f} s"
    color = colors[limit]
    throughput.append(f"${name} using 1:2 with lines lw 2 lc rgb '{color}' title '{label}'")
    latency.append(f"${name} using 1:3 with lines lw 2 lc rgb '{color}' notitle")
    if before:
        operations = before["gets"]["count"] + before["puts"]["count"]
        p99 = max(before["gets"]["p99"], before["puts"]["p99"]) / 1000
        levels.append((color, operations / before["seconds"], p99, float(handoff["seconds"])))
if throughput:
    arrows = []
    for color, rate, p99, took in levels:
        arrows.append(f"set arrow from graph 0, first {rate} to graph 1, first {rate} nohead dt 2 lc rgb '{color}'")
    p99_arrows = [
        f"set arrow from graph 0, first {p99} to graph 1, first {p99} nohead dt 2 lc rgb '{color}'"
        for color, _, p99, _ in levels
    ]
    ends = [
        f"set arrow from first {took}, graph 0 to first {took}, graph 1 nohead dt 3 lc rgb '{color}'"
        for color, _, _, took in levels
    ]
    newline = "\n"
    program.append(f"""
reset
set terminal pngcairo size 960,720 font ',10'
set output '{target}/handoff-timeline.png'
set multiplot layout 2,1 title 'A fourth node joins a loaded 3-node cluster (50 clients, 50 % gets, 1 KiB values)'
unset logscale
set grid
set key top right opaque box
set xlabel 'seconds since the layout change'
set xrange [0:{max([took for _, _, _, took in levels] + [len(entries) for entries in windows]) + 1:.0f}]
set yrange [0:{1.1 * max([rate for _, rate, _, _ in levels] + [entry["operations"] for entries in windows for entry in entries]):.0f}]
set ylabel 'operations per second'
set title 'throughput (dashed: before the change; dotted: the handoff ends)'
{newline.join(arrows + ends)}
plot {', '.join(throughput)}
unset arrow
set ylabel 'p99, ms (gets and puts)'
set title 'p99 latency'
unset key
set yrange [0:{1.1 * max([p99 for _, _, p99, _ in levels] + [entry["p99"] / 1000 for entries in windows for entry in entries]):.0f}]
{newline.join(p99_arrows + ends)}
plot {', '.join(latency)}
unset multiplot
""")

soak = os.path.join(source, "soak-memory.csv")
if os.path.exists(soak):
    import csv

    with open(soak) as file:
        rows = list(csv.DictReader(file))
    nodes = sorted({row["node"] for row in rows})
    lines = []
    for index, node in enumerate(nodes):
        name = f"soak{index}"
        program.append(
            block(
                name,
                [
                    (
                        int(row["seconds"]) / 60,
                        int(row["rss_bytes"]) / 1048576,
                        sum(float(row[part] or 0) for part in ["memtables_bytes", "block_cache_bytes", "table_readers_bytes"])
                        / 1048576,
                    )
                    for row in rows
                    if row["node"] == node
                ],
            )
        )
        lines.append(f"${name} using 1:2 with lines lw 1 lc {index + 1} title '{node}, resident set'")
        if index == 0:
            lines.append(f"${name} using 1:3 with lines lw 1 lc rgb '#888888' title '{node}, RocksDB (memtables, block cache, table readers)'")
            lines.append(f"${name} using 1:($2-$3) with lines lw 2 lc rgb '#000000' title '{node}, everything else'")
    program.append(f"""
reset
set terminal pngcairo size 960,560 font ',10'
set output '{target}/soak-memory.png'
set title 'Memory of each node of a 3-node cluster under a steady mixed load (sampled every 10 s)'
set grid
set key top right opaque box
set xlabel 'minutes'
set ylabel 'MiB'
set yrange [0:260]
plot {', '.join(lines)}
""")

print("\n".join(program))
