"""Reads one run of bench/scripts/tail.sh (DIR: timeline, switches, ours, clock-offset) and
prints where its slow deliveries came from:

    python3 bench/scripts/tail.py DIR SLOW_MS

A slow delivery (over SLOW_MS) counts as "beside another task" when some task that is neither
the server's, the bench's nor idle ran for 0.5 ms or more on a core while it was under way
(or in the 2 ms before it was sent). The rest were slow with only the server and the bench
on the cores: queues of their own.
"""
import re
import sys
from collections import Counter, defaultdict

LONG_RUN_S = 0.0005
BEFORE_S = 0.002
BURST_GAP_S = 0.010

SWITCH = re.compile(
    r"\[(\d+)\]\s+(\d+\.\d+):\s+prev_comm=(.*?) prev_pid=(\d+) .*?==> next_comm=(.*?) next_pid=(\d+)")


def main(directory, slow_ms):
    offset = float(open(f"{directory}/clock-offset").read())
    ours = {line.strip() for line in open(f"{directory}/ours") if line.strip()}
    ours.add("0")  # idle; threads named herald* (server or bench) count as ours too
    arrivals = [tuple(map(int, line.split())) for line in open(f"{directory}/timeline")]
    if not arrivals:
        print("no deliveries")
        return
    latencies = sorted(latency for _, latency in arrivals)
    start = arrivals[0][0] / 1e9 - offset

    # Runs of other tasks: (start, end, comm, tid), from consecutive switches on each core.
    others = []
    running = {}
    for line in open(f"{directory}/switches"):
        match = SWITCH.search(line)
        if not match:
            continue
        cpu, time = match.group(1), float(match.group(2))
        if cpu in running:
            comm, tid, since = running[cpu]
            if tid not in ours and not comm.startswith("herald") and time - since >= LONG_RUN_S:
                others.append((since, time, comm, tid))
        running[cpu] = (match.group(5), match.group(6), time)
    others.sort()

    slow = [(send / 1e9 - offset, latency / 1e9) for send, latency in arrivals
            if latency > slow_ms * 1e6]
    beside, alone = [], []
    for sent, latency in slow:
        near = any(run_start < sent + latency and run_end > sent - BEFORE_S
                   for run_start, run_end, _, _ in others)
        (beside if near else alone).append((sent, latency))

    def percentile(share):
        return latencies[min(len(latencies) - 1, int(len(latencies) * share))] / 1e6

    print(f"deliveries {len(arrivals)}, p50 {percentile(0.5):.2f} ms, p99 {percentile(0.99):.2f} ms")
    print(f"over {slow_ms} ms: {len(slow)}; beside another task's run of 0.5 ms or more: "
          f"{len(beside)}; with only the server and the bench: {len(alone)}")
    end = arrivals[-1][0] / 1e9 - offset
    during = [run for run in others if start <= run[0] <= end]
    totals = defaultdict(float)
    for run_start, run_end, comm, tid in during:
        totals[(comm, tid)] += run_end - run_start
    counts = Counter((comm, tid) for _, _, comm, tid in during)
    print("other tasks' runs of 0.5 ms or more while publishing (task: runs, total ms):")
    for (comm, tid), count in counts.most_common(8):
        print(f"  {comm} ({tid}): {count}, {totals[(comm, tid)] * 1e3:.1f}")
    for label, group in (("beside another task", beside), ("only the server and the bench", alone)):
        bursts = []
        for sent, latency in group:
            if bursts and sent - bursts[-1][1] < BURST_GAP_S:
                bursts[-1][1] = sent
                bursts[-1][2] += 1
                bursts[-1][3] = max(bursts[-1][3], latency)
            else:
                bursts.append([sent, sent, 1, latency])
        print(f"largest bursts, {label} (from the first send, ms):")
        for first, last, count, worst in sorted(bursts, key=lambda burst: -burst[2])[:5]:
            print(f"  {(first - start) * 1e3:8.1f} .. {(last - start) * 1e3:8.1f}: "
                  f"{count} slow, worst {worst * 1e3:.1f} ms")


main(sys.argv[1], float(sys.argv[2]))
