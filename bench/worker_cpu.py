"""CPU of one sipload Worker (user and system, µs per registration), end to end against Kamailio.

    python bench/worker_cpu.py [--rate 3000] [--seconds 8] [--reps 3] [--port 5370]

Runs `Worker.run()` in this process (no aggregate, no report, no worker processes) against a fresh
Kamailio per repetition and reads this process's rusage from "go" to the end of the schedule: the
hot path with its syscalls and trio's wake-ups, nothing else. Checks for a quiet machine first.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio
from common import kamailio, sipload_scenario, wait_quiet

from sipload.engine.worker import Worker
from sipload.scenario import load_scenario


async def measure(scenario_path: Path, port: int) -> tuple[float, float, int, int]:
    scenario = load_scenario(scenario_path)
    worker = Worker(scenario, ("127.0.0.1", port), sink=lambda snap: None)
    marks: list[resource.struct_rusage] = []
    go = trio.Event()

    def ready() -> None:
        marks.append(resource.getrusage(resource.RUSAGE_SELF))
        go.set()

    report = await worker.run(ready=ready, go=go)
    end = resource.getrusage(resource.RUSAGE_SELF)
    start = marks[0]
    ok = sum(e.registrations for e in report.endpoints)
    user = (end.ru_utime - start.ru_utime) / max(ok, 1) * 1e6
    system = (end.ru_stime - start.ru_stime) / max(ok, 1) * 1e6
    return user, system, ok, report.stray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=3000)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--port", type=int, default=5370)
    ap.add_argument("--quiet-wait", type=float, default=60)
    ap.add_argument("--pin", default=None, metavar="GEN:REG",
                    help="pin this process to CPUs GEN and Kamailio to CPUs REG (taskset lists), e.g. 0:1")
    args = ap.parse_args()
    total = int(args.rate * args.seconds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sipload-worker-cpu-") as tmp:
        work = Path(tmp)
        path = sipload_scenario(work / "w.toml", name="worker-cpu", target=f"sip:127.0.0.1:{args.port}",
                                rate=args.rate, total=total, duration=args.seconds + 2)
        for _ in range(args.reps):
            quiet = wait_quiet(0.9, args.quiet_wait)
            with kamailio(args.port, args.port + 1, work / "kamailio") as k:
                if args.pin:
                    generator, registrar = args.pin.split(":")
                    os.sched_setaffinity(0, {int(c) for c in generator.split(",")})
                    k.pin(registrar)
                user, system, ok, _stray = trio.run(measure, path, args.port)
            rows.append((user, system))
            print(f"  {ok}/{total} registered: user {user:.1f} + sys {system:.1f} = {user + system:.1f} µs/reg"
                  f"  [{quiet.text()}]", flush=True)
    print(f"worker at {args.rate:.0f}/s: median user {statistics.median(r[0] for r in rows):.1f} + sys "
          f"{statistics.median(r[1] for r in rows):.1f} = {statistics.median(sum(r) for r in rows):.1f} µs/reg")


if __name__ == "__main__":
    main()
