"""sipload against SIPp, side by side, on a fresh Kamailio for every run.

    python bench/vs_sipp.py [--rates 2000,5000,10000,15000,20000,25000] [--seconds 10] [--reps 2]
                            [--workers N] [--tools SIPp,native,python] [--port 5270] [--write bench/RESULTS.md]
                            [--base DIR]
    python bench/vs_sipp.py --smoke      # 200 registrations per tool, 1 worker, free ports: ~15 s

The tools: SIPp and sipload on its engines (--tools SIPp,native,python: the native, compiled one and the
Python one; `auto` is sipload's default choice), each run as a user runs it.

For every offered rate and repetition, each tool (order alternating between repetitions) runs
rate x seconds digest registrations (REGISTER -> 401 -> REGISTER with credentials -> 200, no refresh,
no unregister) against Kamailio (peers/kamailio: 4 children, maxbuffer 4 MB) started fresh for that run
on 127.0.0.1:--port. Before each run the machine must be quiet (two 1-second samples with >= 90 % of
the CPUs idle; bounded wait, and the row says when it was not).

Per run: achieved rate, registrations not OK, retransmissions, p50/p99 of the full registration (SIPp:
RTD 1 from -trace_rtt, whole ms; sipload: service time from its first send, µs resolution, and in
brackets from the intended start), generator CPU (whole process tree, start to exit) per 1,000
registrations, steady-state generator CPU µs per registration (while 10-90 % of the registrations
completed: start-up, spawning and report writing excluded), and Kamailio's CPU µs per registration.

Clean: every registration OK, 0 retransmissions, p99 <= 20 ms and achieved >= 97 % of offered, in every
repetition. The maximum clean rate of each tool and the ratio sipload / SIPp close the report.

`--base DIR` adds a third tool, `sipload@base`: sipload run from another checkout (e.g. `git archive REV | tar -x
-C DIR`), so that a change is measured before and after, beside SIPp, in the same run.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    SMOKE_HELP,
    TABLE_HEAD,
    RunResult,
    kamailio,
    machine,
    machine_line,
    run_sipload,
    run_sipp,
    say,
    smoke_peers,
    wait_quiet,
)

from sipload.testing.peers import free_port, free_ports_in_a_row

BASE = "sipload@base"


def one_run(tool: str, rate: float, seconds: float, args: argparse.Namespace, work: Path) -> RunResult:
    total = int(rate * seconds)
    quiet = wait_quiet(args.quiet_idle, args.quiet_wait)
    with kamailio(args.port, args.port + 1, work / "kamailio") as k:
        cpu0 = k.cpu()
        timeout = seconds * 3 + 30
        if tool == "SIPp":
            result = run_sipp("127.0.0.1", args.port, rate, total, work / "sipp", local_port=free_port(),
                              timeout=timeout)
        else:  # sipload on one engine, from this checkout, or from --base (its default engine)
            other: dict[str, Any] = {"repo": args.base, "tool": BASE} if tool == BASE else {"engine": tool}
            result = run_sipload(f"sip:127.0.0.1:{args.port}", rate, total, work / "sipload", timeout=timeout,
                                 workers=args.workers, tick=args.tick, **other)
        result.target_cpu_s = k.cpu() - cpu0
    result.quiet = quiet.text()
    return result


def summarize(results: list[RunResult], rates: list[float]) -> tuple[list[str], dict[str, float]]:
    lines = ["", "Median of the repetitions (clean: every repetition clean):", "", TABLE_HEAD]
    best: dict[str, float] = {}
    tools = sorted({r.tool for r in results}, key=lambda t: (t != "SIPp", t))
    for rate in rates:
        for tool in tools:
            runs = [r for r in results if r.tool == tool and r.offered == rate]
            if not runs:
                continue
            med = RunResult(tool, runs[0].target, rate, runs[0].total)

            def m(values: list[float]) -> float:
                values = [v for v in values if not math.isnan(v)]
                return statistics.median(values) if values else math.nan

            med.ok = int(m([r.ok for r in runs]))
            med.failed = int(m([r.failed for r in runs]))
            med.retrans = int(m([r.retrans for r in runs]))
            med.achieved = m([r.achieved for r in runs])
            med.p50_ms = m([r.p50_ms for r in runs])
            med.p99_ms = m([r.p99_ms for r in runs])
            med.p99_intended_ms = m([r.p99_intended_ms for r in runs])
            med.cpu_s = m([r.cpu_s for r in runs])
            med.steady_us = m([r.steady_us for r in runs])
            med.target_cpu_s = m([r.target_cpu_s for r in runs])
            row = med.row()
            clean = all(r.clean for r in runs)
            row = row[: row.rstrip(" |").rfind("|") + 1] + f" {'yes' if clean else 'no':<5} |"
            lines.append(row)
            if clean:
                best[tool] = max(best.get(tool, 0.0), rate)
    lines.append("")
    sipp = best.get("SIPp", 0.0)
    for tool in tools:
        lines.append(f"max clean rate {tool}: {best.get(tool, 0.0):.0f}/s")
    for tool in tools:
        if tool != "SIPp":
            ratio = best.get(tool, 0.0) / sipp if sipp else math.nan
            lines.append(f"ratio {tool} / SIPp: {ratio:.2f}")
    return lines, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="2000,5000,10000,15000,20000,25000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None, help="sipload --workers (default: its own: one per core)")
    ap.add_argument("--tools", default="SIPp,native,python",
                    help="SIPp and sipload's engines (native, python, auto), in the order of the first repetition")
    ap.add_argument("--tick", type=lambda ms: float(ms) / 1e3, default=None, metavar="MS",
                    help="sipload's load.tick in ms (default: its own, 1 ms)")
    ap.add_argument("--port", type=int, default=5270, help="Kamailio's SIP port (JSON-RPC: port + 1)")
    ap.add_argument("--quiet-idle", type=float, default=0.9)
    ap.add_argument("--quiet-wait", type=float, default=120.0)
    ap.add_argument("--write", type=Path, default=None, help="append the report to this markdown file")
    ap.add_argument("--base", type=Path, default=None, metavar="DIR",
                    help=f"also run sipload from this checkout as '{BASE}' (e.g. git archive REV | tar -x -C DIR): "
                         "before and after a change, side by side in the same run")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    tools = args.tools.split(",") + ([BASE] if args.base is not None else [])
    if args.smoke:
        args.rates, args.seconds, args.reps, args.workers, args.quiet_wait = "200", 1.0, 1, 1, 0.0
        args.port = free_ports_in_a_row(2)
        if not smoke_peers("vs_sipp", "kamailio"):
            return
        if "SIPp" in tools and not smoke_peers("the SIPp runs", "sipp"):
            tools.remove("SIPp")
    rates = [float(r) for r in args.rates.split(",")]
    m = machine()
    head = [f"## sipload vs SIPp against Kamailio ({m['date']})", "",
            f"Machine: {machine_line(m)}", "",
            f"Command: python bench/vs_sipp.py --rates {args.rates} --seconds {args.seconds:g} --reps {args.reps}"
            + (f" --workers {args.workers}" if args.workers else "")
            + (f" --tick {args.tick * 1e3:g}" if args.tick is not None else "")
            + (f" --tools {args.tools}" if args.tools != "SIPp,native,python" else "")
            + (f" --base {args.base}" if args.base else ""), "",
            "Every run:", "", TABLE_HEAD]
    for line in head:
        say(line)
    results: list[RunResult] = []
    quiet_notes: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sipload-vs-sipp-") as tmp:
        work = Path(tmp)
        for rate in rates:
            for rep in range(args.reps):
                order = tools if rep % 2 == 0 else list(reversed(tools))
                for tool in order:
                    r = one_run(tool, rate, args.seconds, args, work)
                    results.append(r)
                    say(r.row())
                    if not r.quiet.startswith("quiet") or r.notes:
                        note = f"  {tool} at {rate:.0f}/s: {r.quiet}" + (f"; {'; '.join(r.notes)}" if r.notes else "")
                        quiet_notes.append(note)
                        say(note)
    summary, _ = summarize(results, rates)
    for line in summary:
        say(line)
    say(f"\n({time.monotonic() - started:.0f} s)")
    if args.write is not None:
        text = "\n".join([*head, *[r.row() for r in results], "", *quiet_notes, *summary, ""])
        with args.write.open("a") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
