"""Turns `herald bench --json` lines of herald and reference runs into a Markdown table of
medians with ratios (herald / reference). Used by scripts/bench-vs-reference.sh."""
import json
import statistics
import sys

FIGURES = {
    "hold": ["streams_per_s", "open_p99_ms", "open_failures", "server_rss_per_stream_kib"],
    "fanout": ["delivery_latency_p50_ms", "delivery_latency_p99_ms", "delivery_latency_max_ms", "lost", "duplicates"],
    "targeted": ["publish_per_s", "publish_latency_p50_ms", "publish_latency_p99_ms",
                 "delivery_latency_p50_ms", "delivery_latency_p99_ms", "lost"],
    "replay": ["catchup_s", "delivered", "lost", "duplicates"],
}

path, runs, machine, versions, *scenarios = sys.argv[1:]
rows = [json.loads(line) for line in open(path) if line.strip().startswith("{")]
print(f"Machine: {machine}. Versions: {versions}. Medians of {runs} run(s) each.\n")
print("| scenario | figure | herald | reference | herald / reference |")
print("|---|---|---|---|---|")
for name, figures in FIGURES.items():
    for figure in figures:
        values = {}
        for label in ("herald", "reference"):
            found = [r[figure] for r in rows if r.get("scenario") == name and r.get("label") == label
                     and isinstance(r.get(figure), (int, float))]
            values[label] = statistics.median(found) if found else None
        h, r = values["herald"], values["reference"]
        ratio = f"{h / r:.2f}" if h is not None and r not in (None, 0) else "-"
        show = lambda v: "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))
        print(f"| {name} | {figure} | {show(h)} | {show(r)} | {ratio} |")
print("\nCommands: `scripts/bench-vs-reference.sh`, which runs, for each server:")
for scenario in scenarios:
    print(f"- `herald bench {scenario}`")
