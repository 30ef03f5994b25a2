"""Reads the timeline of a fanout or floor run (`herald-bench fanout ... --timeline FILE`) and
prints, for each broadcast in sending order, when its first and last streams had it and its
median, and how many of the run's slowest 1 % of deliveries it holds:

    python3 bench/scripts/broadcasts.py FILE

A run's delivery p99 is set by its slowest broadcasts: this shows whether a few slow ones set
it or every broadcast is as slow, and how long each took to reach its first stream
(BENCHMARKS.md, "Issue 16, twelfth step").
"""
import sys
from collections import defaultdict


def main(path):
    by_broadcast = defaultdict(list)
    with open(path) as timeline:
        for line in timeline:
            sent, latency = line.split()
            by_broadcast[int(sent)].append(int(latency) / 1e6)
    if not by_broadcast:
        sys.exit(f"{path}: no deliveries")
    every = sorted(ms for latencies in by_broadcast.values() for ms in latencies)
    p99 = every[min(len(every) - 1, int(len(every) * 0.99))]
    first_sent = min(by_broadcast)
    print(f"{len(by_broadcast)} broadcasts, {len(every)} deliveries, p99 {p99:.1f} ms")
    print("  #   sent s  first ms  p50 ms  last ms  at or over the p99")
    for number, sent in enumerate(sorted(by_broadcast)):
        latencies = sorted(by_broadcast[sent])
        over = sum(1 for ms in latencies if ms >= p99)
        print(f"{number:3d} {(sent - first_sent) / 1e9:8.2f} {latencies[0]:9.1f}"
              f" {latencies[len(latencies) // 2]:7.1f} {latencies[-1]:8.1f}  {over}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
