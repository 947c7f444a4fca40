"""CPU of one sipload Worker (user and system, µs per registration), end to end against Kamailio.

    python bench/worker_cpu.py [--rate 3000] [--seconds 8] [--reps 3] [--port 5370] [--ticks 0,1] [--pin 0:1]
    python bench/worker_cpu.py --smoke      # 200 registrations, free ports: ~3 s

Runs `Worker.run()` in this process (no worker processes, no report) against a fresh Kamailio per
repetition and reads this process's rusage from "go" to the end of the schedule: the hot path with its
syscalls and trio's wake-ups, nothing else. Checks for a quiet machine first.

`--ticks` compares values of the scheduler's `load.tick` (milliseconds) side by side: every repetition
runs each of them (order rotating), and the report gives, per tick, the CPU per registration, the
register latency (p50/p99 service time and from the intended start, µs) and the schedule lag, then the
CPU ratio of each tick to the first one, taken within each repetition.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from common import SMOKE_HELP, kamailio, sipload_scenario, smoke_peers, wait_quiet

from sipload.engine.worker import Worker
from sipload.metrics.aggregate import Aggregate
from sipload.metrics.phases import Kind, Phase
from sipload.scenario import load_scenario
from sipload.testing.peers import free_ports_in_a_row


@dataclass(slots=True)
class Measured:
    user: float       # µs per registration
    system: float
    ok: int
    p50: float        # register, service time, µs
    p99: float
    p99_intended: float
    lag_max: float    # schedule lag, µs

    @property
    def cpu(self) -> float:
        return self.user + self.system


async def measure(scenario_path: Path, port: int) -> Measured:
    scenario = load_scenario(scenario_path)
    agg = Aggregate(0.0)
    worker = Worker(scenario, ("127.0.0.1", port), sink=agg.add)
    marks: list[resource.struct_rusage] = []
    go = trio.Event()

    def ready() -> None:
        marks.append(resource.getrusage(resource.RUSAGE_SELF))
        go.set()

    report = await worker.run(ready=ready, go=go)
    end = resource.getrusage(resource.RUSAGE_SELF)
    start = marks[0]
    ok = sum(e.registrations for e in report.endpoints)
    service = agg.histogram(Phase.REGISTER, Kind.SERVICE).percentiles_us((50.0, 99.0))
    intended = agg.histogram(Phase.REGISTER, Kind.INTENDED).percentiles_us((99.0,))
    return Measured(
        user=(end.ru_utime - start.ru_utime) / max(ok, 1) * 1e6,
        system=(end.ru_stime - start.ru_stime) / max(ok, 1) * 1e6,
        ok=ok,
        p50=service[50.0],
        p99=service[99.0],
        p99_intended=intended[99.0],
        lag_max=agg.schedule_lag_summary().get("max", 0.0) * 1e3,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=3000)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--port", type=int, default=5370)
    ap.add_argument("--quiet-wait", type=float, default=60)
    ap.add_argument("--ticks", default=None, metavar="MS,MS",
                    help="compare these load.tick values (ms), side by side; default: the scenario default only")
    ap.add_argument("--pin", default=None, metavar="GEN:REG",
                    help="pin this process to CPUs GEN and Kamailio to CPUs REG (taskset lists), e.g. 0:1")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.rate, args.seconds, args.reps, args.quiet_wait = 200.0, 1.0, 1, 0.0
        args.port = free_ports_in_a_row(2)
        if not smoke_peers("worker_cpu", "kamailio"):
            return
    total = int(args.rate * args.seconds)
    ticks: list[float | None] = [float(t) / 1e3 for t in args.ticks.split(",")] if args.ticks else [None]
    rows: dict[float | None, list[Measured]] = {t: [] for t in ticks}
    with tempfile.TemporaryDirectory(prefix="sipload-worker-cpu-") as tmp:
        work = Path(tmp)
        paths = {t: sipload_scenario(work / f"w{k}.toml", name="worker-cpu", target=f"sip:127.0.0.1:{args.port}",
                                     rate=args.rate, total=total, duration=args.seconds + 2, tick=t)
                 for k, t in enumerate(ticks)}
        for rep in range(args.reps):
            order = ticks[rep % len(ticks):] + ticks[:rep % len(ticks)]
            for tick in order:
                quiet = wait_quiet(0.9, args.quiet_wait)
                with kamailio(args.port, args.port + 1, work / "kamailio") as k:
                    if args.pin:
                        generator, registrar = args.pin.split(":")
                        os.sched_setaffinity(0, {int(c) for c in generator.split(",")})
                        k.pin(registrar)
                    m = trio.run(measure, paths[tick], args.port)
                rows[tick].append(m)
                print(f"  tick {label(tick)}: {m.ok}/{total} registered: user {m.user:.1f} + sys {m.system:.1f} = "
                      f"{m.cpu:.1f} µs/reg; register p50 {m.p50:.0f} p99 {m.p99:.0f} µs (intended p99 "
                      f"{m.p99_intended:.0f}), lag max {m.lag_max:.0f} µs  [{quiet.text()}]", flush=True)
    first = ticks[0]
    for tick in ticks:
        ms = rows[tick]
        med = statistics.median
        line = (f"worker at {args.rate:.0f}/s, tick {label(tick)}: median user {med(m.user for m in ms):.1f} + sys "
                f"{med(m.system for m in ms):.1f} = {med(m.cpu for m in ms):.1f} µs/reg; register p50 "
                f"{med(m.p50 for m in ms):.0f} p99 {med(m.p99 for m in ms):.0f} µs, intended p99 "
                f"{med(m.p99_intended for m in ms):.0f} µs, lag max {med(m.lag_max for m in ms):.0f} µs")
        if tick != first:
            ratios = [m.cpu / f.cpu for m, f in zip(ms, rows[first], strict=True)]
            line += f"; CPU / tick {label(first)}: {med(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})"
        print(line)


def label(tick: float | None) -> str:
    return "default" if tick is None else f"{tick * 1e3:g} ms"


if __name__ == "__main__":
    main()
