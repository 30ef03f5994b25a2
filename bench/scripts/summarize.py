"""Turns the tagged `herald-bench --json` lines of a driver run into the Markdown tables of
BENCHMARKS.md (medians over the runs of each case).

  summarize.py vs-reference RESULTS RUNS MACHINE VERSIONS CASE...   herald, Nchan, reference, floor
  summarize.py scaling RESULTS RUNS MACHINE VERSIONS CASE...        herald and floor as N grows
  summarize.py ab RESULTS RUNS MACHINE VERSIONS CASE...             two herald binaries, A/B
"""
import json
import statistics
import sys

from figures import show, spread

FIGURES = {
    "hold": ["streams_per_s", "open_p99_ms", "open_failures", "server_rss_per_stream_kib"],
    "fanout": ["broadcast_per_s", "delivery_latency_p50_ms", "delivery_latency_p99_ms", "delivery_latency_max_ms",
               "all_received_p50_ms", "broadcast_latency_p50_ms", "lost", "duplicates"],
    "targeted": ["publish_per_s", "publish_latency_p50_ms", "publish_latency_p99_ms",
                 "delivery_latency_p50_ms", "delivery_latency_p99_ms", "lost"],
    "replay": ["catchup_s", "delivered", "lost", "duplicates"],
    "many-recipients": ["stored_per_s", "delivered_per_s", "delivery_latency_p50_ms",
                        "delivery_latency_p99_ms", "batch_latency_p99_ms", "lost"],
}


def runs_of(rows, case, label, figure):
    return [r[figure] for r in rows if r.get("case") == case and r.get("label") == label
            and isinstance(r.get(figure), (int, float))]


def median(rows, case, label, figure):
    found = runs_of(rows, case, label, figure)
    return statistics.median(found) if found else None


def header(runs, machine, versions):
    print(f"Machine: {machine}. Versions: {versions}. Medians of {runs} run(s) each.\n")


def spread_note(rows, case, label, figure):
    percent = spread(runs_of(rows, case, label, figure))
    return "" if percent is None else f" ±{percent:.0f}%"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b not in (None, 0) else "-"


def vs_reference(rows, cases):
    print("| case | figure | herald | nginx+Nchan | reference | herald / Nchan | herald / reference "
          "| floor | floor, herald's frame | herald / that floor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        for figure in FIGURES[case.split()[0]]:
            labels = ("herald", "nchan", "reference", "floor", "floor-herald")
            h, n, r, f, fh = (median(rows, case, label, figure) for label in labels)
            h_, n_, r_, _, fh_ = (spread_note(rows, case, label, figure) for label in labels)
            print(f"| `{case}` | {figure} | {show(h)}{h_} | {show(n)}{n_} | {show(r)}{r_} "
                  f"| {ratio(h, n)} | {ratio(h, r)} | {show(f)} | {show(fh)}{fh_} "
                  f"| {ratio(h, fh)} |")


def scaling(rows, cases):
    print("| case | figure | herald | x previous row | floor | x previous row |")
    print("|---|---|---|---|---|---|")
    scaled = {"fanout": ["all_received_p50_ms", "delivery_latency_p99_ms"],
              "targeted": ["publish_per_s", "publish_latency_p99_ms", "delivery_latency_p99_ms", "lost"]}
    previous = {}
    for case in cases:
        kind = case.split()[0]
        for figure in scaled[kind]:
            cells = []
            for label in ("herald", "floor"):
                value = median(rows, case, label, figure)
                before = previous.get((kind, figure, label))
                growth = f"{value / before:.2f}" if value is not None and before else "-"
                cells += [show(value), growth]
                previous[(kind, figure, label)] = value
            print(f"| `{case}` | {figure} | " + " | ".join(cells) + " |")


def ab(rows, cases):
    print("| case | figure | before: each run | median | after: each run | median | after / before |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        for figure in FIGURES[case.split()[0]] + ["server_cpu_s"]:
            cells = []
            for label in ("before", "after"):
                each = runs_of(rows, case, label, figure)
                cells += [" / ".join(show(v) for v in each) or "-", show(median(rows, case, label, figure))]
            b, a = median(rows, case, "before", figure), median(rows, case, "after", figure)
            ratio = f"{a / b:.2f}" if a is not None and b else "-"
            print(f"| `{case}` | {figure} | " + " | ".join(cells) + f" | {ratio} |")


mode, path, runs, machine, versions, *cases = sys.argv[1:]
rows = [json.loads(line) for line in open(path) if line.strip().startswith("{")]
header(runs, machine, versions)
{"vs-reference": vs_reference, "scaling": scaling, "ab": ab}[mode](rows, cases)
print("\nEach case is `herald-bench CASE` with the server's URLs, `--server-pid`, a fresh")
print("`--source-addrs` range and `--pub-body '{\"title\":\"t\",\"message\":\"{ts}\"}'`; a fresh server per run.")
if mode != "ab":
    print("floor: `herald-bench floor` with the same flags (an ideal server: one write per stream);")
    print("floor, herald's frame: the same with `--floor-frame herald` (each frame of the size and shape")
    print("of herald's announcement, which a stream of herald's must carry);")
    print("for targeted, `herald-bench targeted-floor` (an ideal durable server: each group of")
    print("publishes written to a log file and fdatasynced, then one write per stream and per answer).")
print("herald: `target/release/herald serve --listen 127.0.0.1:3000 --data-dir DIR --max-connections 20000")
print("--max-connections-per-user 100000` (SQLite, `--sync full`: every 201 fsynced).", end="")
if mode == "ab":
    print(" Runs alternate before, after.")
else:
    print(" reference: a copy of")
    print("`../shared/reference/seed-node`, `npm install && npx tsc`, then `PORT=3999 node dist/server.js`.")
    if mode == "vs-reference":
        print("nginx+Nchan: Debian's nginx-light and libnginx-mod-nchan with `bench/nchan/nginx.conf`")
        print("(one worker, a channel per user plus a broadcast channel, messages in memory only);")
        print("its CPU and memory are the master's and the worker's. ±: spread, (max - min) / median.")
