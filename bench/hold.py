"""Hold N endpoints registered and renewing, and measure generator memory and refresh punctuality.

    python bench/hold.py [--endpoints 100000] [--rate 2000] [--minutes 4] [--expires 300]
                         [--target kamailio|embedded] [--workers N] [--engine native|python|auto]
                         [--port 5570] [--write bench/RESULTS.md] [--keep DIR]
    python bench/hold.py --smoke      # 40 endpoints, expiry 4 s, 6 s against the embedded registrar

N endpoints arrive at --rate, register (digest) with Expires --expires and refresh at half of it
(+-5 % jitter), for --minutes; then they unregister. Against Kamailio (peers/kamailio, fresh, on
127.0.0.1:--port) or sipload's embedded registrar (which then lives in the generator's main process:
only the worker processes count as the generator).

Prints: registrations / refreshes / unregistrations OK and failed; generator RSS (peak of 1-second samples:
every process of the generator together, the worker processes alone, the main process), per endpoint;
refresh punctuality = the share of refreshes sent within 100 ms of their scheduled time, read from
schedule_lag.hlog in the intervals without arrivals (those hold refreshes only); CPU of the generator while holding.
Targets: every process of the generator together <= 1 GiB RSS (for 1,000,000 endpoints on the native
engine), >= 99.9 % punctual refreshes, none left registered at the end. Kamailio gets shared memory for
the bindings (SIPLOAD_KAMAILIO_SHM_MB: 2 KB per endpoint, at least 512 MB).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    SMOKE_HELP,
    descendants,
    kamailio,
    kill_group,
    machine,
    machine_line,
    rss_bytes,
    say,
    sipload_scenario,
    start_sipload,
    tree_cpu,
    wait_quiet,
)

PUNCTUAL_US = 100_000


def refresh_lags(out: Path) -> tuple[int, int, float, float]:
    """(refreshes seen, within 100 ms, p99 ms, max ms) from the intervals that had no arrivals."""
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    arrivals: list[tuple[float, int]] = []   # (end of the interval, registrations started in it)
    started = 0
    for line in (out / "intervals.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "interval":
            cumulative = int(rec["cumulative"]["phases"].get("register", {}).get("attempted", 0))
            arrivals.append((float(rec["t"]), cumulative - started))
            started = cumulative
    total = HdrHistogram(1, 3_600_000_000, 3)
    reader = HistogramLogReader(str(out / "schedule_lag.hlog"), HdrHistogram(1, 3_600_000_000, 3))
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        end = (h.get_end_time_stamp() - reader.base_time_sec * 1000) / 1000.0
        # the jsonl interval that ends at the same time: skip it if any registration arrived in it
        match = min(arrivals, key=lambda a: abs(a[0] - end)) if arrivals else None
        if match is None or abs(match[0] - end) > 0.5 or match[1] > 0:
            continue
        total.add(h)
    seen = total.get_total_count()
    if not seen:
        return 0, 0, math.nan, math.nan
    within = 0
    for item in total.get_recorded_iterator():
        if item.value_iterated_to <= PUNCTUAL_US:
            within += item.count_at_value_iterated_to
    return seen, within, total.get_value_at_percentile(99) / 1000, total.get_max_value() / 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--expires", type=int, default=300)
    ap.add_argument("--target", choices=("kamailio", "embedded"), default="kamailio")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--engine", choices=("native", "python", "auto"), default=None,
                    help="sipload --engine (default: its own choice)")
    ap.add_argument("--port", type=int, default=5570)
    ap.add_argument("--quiet-wait", type=float, default=120)
    ap.add_argument("--write", type=Path, default=None, help="append the report to this markdown file")
    ap.add_argument("--keep", type=Path, default=None, help="copy the run's results directory here")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:   # no peer needed: the embedded registrar
        args.endpoints, args.rate, args.minutes, args.expires = 40, 40.0, 0.1, 4
        args.target, args.workers, args.quiet_wait = "embedded", 2, 0.0
    settle = 1.0 if args.smoke else 5.0   # seconds after the arrivals and before the end left out of "holding"
    n = args.endpoints
    duration = args.minutes * 60
    if n / args.rate + settle > args.expires * 0.45:
        say("note: arrivals last longer than the first refreshes take to come: punctuality intervals shrink")
    m = machine()
    report = [f"## hold: {n:,} endpoints, expires {args.expires} s, {args.minutes:g} min against {args.target} "
              f"({m['date']})", "", f"Machine: {machine_line(m)}", ""]
    with tempfile.TemporaryDirectory(prefix="sipload-hold-") as tmp:
        work = Path(tmp)
        quiet = wait_quiet(0.9, args.quiet_wait)
        target = "embedded" if args.target == "embedded" else f"sip:127.0.0.1:{args.port}"
        scenario = sipload_scenario(work / "hold.toml", name="hold", target=target, rate=args.rate, total=n,
                                    duration=duration, expires=args.expires, unregister=True, jitter=0.05,
                                    unregister_timeout=max(30.0, 2 * n / args.rate))
        if args.target == "embedded":
            text = scenario.read_text()
            text += (f'\n[registrar]\nlisten = "127.0.0.1:0"\npassword = "pw-{{user}}"\n'
                     f"min_expires = 1\nmax_expires = {max(7200, args.expires)}\nnonce_lifetime = \"3600s\"\n")
            scenario.write_text(text)
        os.environ["SIPLOAD_KAMAILIO_SHM_MB"] = str(max(512, math.ceil(n * 2048 / 2**20)))
        ctx = kamailio(args.port, args.port + 1, work / "kamailio") if args.target == "kamailio" else None
        k = ctx.__enter__() if ctx is not None else None
        try:
            peak_workers = 0
            peak_main = 0
            peak_all = 0
            samples: list[tuple[float, float, int]] = []
            memory: list[tuple[float, int, int]] = []   # (t, workers' RSS, main RSS)
            run = start_sipload(scenario, work / "out", args.workers, engine=args.engine)
            stop = threading.Event()

            def sample() -> None:
                nonlocal peak_workers, peak_main, peak_all
                while not stop.is_set():
                    kids = descendants(run.proc.pid)
                    workers = sum(rss_bytes(p) for p in kids)
                    main_rss = rss_bytes(run.proc.pid)
                    peak_workers = max(peak_workers, workers)
                    peak_main = max(peak_main, main_rss)
                    peak_all = max(peak_all, workers + main_rss)
                    memory.append((time.monotonic(), workers, main_rss))
                    samples.append((time.monotonic(), tree_cpu(run.proc.pid), run.registered))
                    stop.wait(1.0)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                run.proc.wait(timeout=duration + 300)
            except Exception:
                kill_group(run.proc)
                raise
            finally:
                stop.set()
                sampler.join(5)
                kill_group(run.proc)
            kam_cpu = k.cpu() if k is not None else math.nan
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
        out = work / "out"
        if args.keep is not None:
            shutil.copytree(out, args.keep, dirs_exist_ok=True)
        summary = json.loads((out / "summary.json").read_text())
        seen, within, p99, worst = refresh_lags(out)
        reg, ref, unreg = summary["registrations"], summary["refreshes"], summary["unregistrations"]
        # generator CPU while holding: from the end of the arrivals to the start of the unregistration
        arrivals_end = n / args.rate + settle
        hold = [s for s in samples if arrivals_end <= s[0] - samples[0][0] <= duration - settle]
        hold_cpu = (hold[-1][1] - hold[0][1]) / (hold[-1][0] - hold[0][0]) if len(hold) > 1 else math.nan
        t0 = memory[0][0] if memory else 0.0
        held = [m for m in memory if arrivals_end <= m[0] - t0 <= duration - settle]
        held_workers = max((m[1] for m in held), default=0)
        held_main = max((m[2] for m in held), default=0)
        punctual = within / seen if seen else math.nan
        lines = [
            f"{quiet.text()}; command: python bench/hold.py --endpoints {n} --rate {args.rate:g} "
            f"--minutes {args.minutes:g} --expires {args.expires} --target {args.target}"
            + (f" --workers {args.workers}" if args.workers else "")
            + (f" --engine {args.engine}" if args.engine else "") + f"; engines {summary.get('engines')}",
            "",
            "| what | value |",
            "|---|---|",
            f"| registrations ok / failed | {reg['succeeded']:,} / {reg['failed']:,} |",
            f"| refreshes ok / failed | {ref['succeeded']:,} / {ref['failed']:,} |",
            f"| unregistrations ok / failed | {unreg['succeeded']:,} / {unreg['failed']:,} |",
            f"| retransmissions | {summary.get('retransmissions', 0):,} |",
            f"| generator RSS, every process together (peak) | {peak_all / 2**20:,.0f} MiB = "
            f"{peak_all / n / 1024:,.2f} KiB per endpoint |",
            f"| generator RSS, worker processes (peak; none when one worker runs in the main process) | "
            f"{peak_workers / 2**20:,.0f} MiB = "
            f"{peak_workers / n / 1024:,.2f} KiB per endpoint |",
            f"| generator RSS, worker processes, while holding (after arrivals, before unregistering) | "
            f"{held_workers / 2**20:,.0f} MiB = {held_workers / n / 1024:,.2f} KiB per endpoint |",
            f"| main process RSS, while holding / peak (peak: the workers' reports, the results and "
            f"report.html at the end; the embedded registrar lives here too) | {held_main / 2**20:,.0f} MiB / "
            f"{peak_main / 2**20:,.0f} MiB |",
            f"| refreshes with a known lag (intervals without arrivals) | {seen:,} |",
            f"| punctual refreshes (sent <= 100 ms after schedule) | {punctual:.4%} ({within:,} of {seen:,}) |",
            f"| refresh lag p99 / max | {p99:.1f} ms / {worst:.1f} ms |",
            f"| generator CPU while holding | {hold_cpu:.1%} of one core |",
        ]
        if not math.isnan(kam_cpu):
            lines.append(f"| Kamailio CPU over the run | {kam_cpu:.1f} s |")
        left = next((int(m[1]) for note in summary.get("notes", [])
                     if (m := re.match(r"(\d+) endpoints may still be registered", note))), 0)
        lines.append(f"| left registered at the end | {left:,} |")
        target_ok = peak_all <= 2**30 and punctual >= 0.999 and left == 0
        verdict = ("met" if target_ok else "NOT met") if n >= 1_000_000 else "n/a (fewer endpoints)"
        lines += ["", "Target (1,000,000 endpoints, every generator process together <= 1 GiB, >= 99.9 % punctual, "
                  f"none left registered): {verdict}"
                  + ("" if target_ok else f" (RSS {peak_all / 2**30:.2f} GiB, punctual {punctual:.4%}, left {left:,})")]
        for line in report + lines:
            say(line)
        if args.write is not None:
            with args.write.open("a") as f:
                f.write("\n" + "\n".join(report + lines) + "\n")


if __name__ == "__main__":
    main()
