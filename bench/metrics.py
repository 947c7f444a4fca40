"""Cost of the metrics hot path: µs per Recorder.record and per take_interval (median of repetitions).

    PYTHONPATH=. python bench/metrics.py   (or with sipload installed)
"""

from __future__ import annotations

import random
import statistics
import time

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


def bench_take_interval(values: list[tuple[int, int]]) -> tuple[float, float]:
    r = Recorder(now=0.0)
    phases = list(Phase)
    for i, (a, b) in enumerate(values[:PER_INTERVAL]):
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
    rng = random.Random(1)
    values = [(a, rng.randint(0, a)) for a in (rng.randint(500, 2_000_000) for _ in range(RECORDS))]
    rec = [bench_record(values) for _ in range(REPEATS)]
    ivl = [bench_take_interval(values) for _ in range(REPEATS)]
    print(f"Recorder.record:        {statistics.median(rec):8.3f} µs/call (two histograms)")
    print(f"Recorder.take_interval: {statistics.median(x for x, _ in ivl):8.0f} µs "
          f"({PER_INTERVAL} records over {len(Phase)} phases + schedule lag)")
    print(f"Aggregate.add:          {statistics.median(y for _, y in ivl):8.0f} µs (that snapshot)")


if __name__ == "__main__":
    main()
