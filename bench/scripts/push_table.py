"""The table of bench/scripts/push.sh, from its tagged `herald-bench --json` lines: each figure's
runs in order, median and spread ((max - min) / median), then the ratio push-on / push-off of
publishes per second (medians, and run by run).

  push_table.py RESULTS
"""
import json
import statistics
import sys

from figures import show, spread

FIGURES = {
    "push": ["publish_per_s", "push_per_s", "push_latency_p50_ms", "push_latency_p90_ms",
             "push_latency_p99_ms", "push_latency_max_ms", "push_lost", "push_malformed",
             "push_duplicates", "publish_latency_p99_ms", "server_cpu_s", "server_rss_after_kib",
             "client_cpu_s"],
    "push-off": ["publish_per_s", "publish_latency_p50_ms", "publish_latency_p99_ms",
                 "delivery_latency_p99_ms", "lost", "server_cpu_s", "client_cpu_s"],
    "push-on": ["publish_per_s", "publish_latency_p50_ms", "publish_latency_p99_ms",
                "delivery_latency_p99_ms", "lost", "push_received", "push_lost", "push_malformed",
                "push_per_s", "push_trail_s", "server_cpu_s", "client_cpu_s"],
}


def values(rows, label, figure):
    return [r[figure] for r in rows if r.get("label") == label
            and isinstance(r.get(figure), (int, float)) and not isinstance(r.get(figure), bool)]


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip().startswith("{")]
    print("| case | figure | each run | median | spread |")
    print("|---|---|---|---|---|")
    for label, figures in FIGURES.items():
        case = next((r["case"] for r in rows if r.get("label") == label), None)
        if case is None:
            continue
        for figure in figures:
            found = values(rows, label, figure)
            median = statistics.median(found) if found else None
            each = " / ".join(show(v) for v in found) or "-"
            percent = spread(found)
            shown = "-" if percent is None else f"{percent:.0f} %"
            print(f"| {label}: `{case}` | {figure} | {each} | {show(median)} | {shown} |")
    off, on = values(rows, "push-off", "publish_per_s"), values(rows, "push-on", "publish_per_s")
    if off and on:
        ratio = statistics.median(on) / statistics.median(off)
        each = " / ".join(f"{b / a:.2f}" for a, b in zip(off, on))
        verdict = "within" if ratio >= 0.9 else "not within"
        print(f"\npush-on / push-off publishes per second: {ratio:.2f} (medians; run by run "
              f"{each}): {verdict} 10 %.")


if __name__ == "__main__":
    main(sys.argv[1])
