"""Cost of the metrics hot path: µs per Recorder.record (two histograms), per take_interval of an interval
of 10,000 records over every phase, and per Aggregate.add of that snapshot (wall time, median of 7).

    python bench/metrics.py
    python bench/metrics.py --smoke      # 2,000 records, once: well under a second
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipload.metrics import Aggregate, Phase, Recorder

REPEATS = 7
RECORDS = 100_000  # per repetition
PER_INTERVAL = 10_000  # records in the interval that take_interval encodes


def bench_record(values: list[tuple[int, int]]) -> float:
    r = Recorder(now=0.0)
    record, phase = r.record, Phase.REGISTER
    t = time.perf_counter()
    for a, b in values:
        record(phase, a, b)
    return (time.perf_counter() - t) / len(values) * 1e6


def bench_take_interval(values: list[tuple[int, int]], per_interval: int) -> tuple[float, float]:
    r = Recorder(now=0.0)
    phases = list(Phase)
    for i, (a, b) in enumerate(values[:per_interval]):
        r.record(phases[i % len(phases)], a, b)
        r.schedule_lag(b // 10)
        r.attempt(Phase.REGISTER)
        r.success(Phase.REGISTER)
        r.response(200)
    t = time.perf_counter()
    snap = r.take_interval(now=1.0)
    took = (time.perf_counter() - t) * 1e6
    agg = Aggregate(started_at_unix=0.0)
    t = time.perf_counter()
    agg.add(snap)
    return took, (time.perf_counter() - t) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true",
                    help="2,000 records, once, to show that the script still runs: its figures measure nothing")
    args = ap.parse_args()
    records, repeats, per_interval = (2_000, 1, 1_000) if args.smoke else (RECORDS, REPEATS, PER_INTERVAL)
    rng = random.Random(1)
    values = [(a, rng.randint(0, a)) for a in (rng.randint(500, 2_000_000) for _ in range(records))]
    rec = [bench_record(values) for _ in range(repeats)]
    ivl = [bench_take_interval(values, per_interval) for _ in range(repeats)]
    print(f"Recorder.record:        {statistics.median(rec):8.3f} µs/call (two histograms)")
    print(f"Recorder.take_interval: {statistics.median(x for x, _ in ivl):8.0f} µs "
          f"({per_interval} records over {len(Phase)} phases + schedule lag)")
    print(f"Aggregate.add:          {statistics.median(y for _, y in ivl):8.0f} µs (that snapshot)")


if __name__ == "__main__":
    main()
