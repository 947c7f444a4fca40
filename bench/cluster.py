"""What the Dask layer costs: the same scenario with `--workers 2` and with `--cluster local:2`.

    python bench/cluster.py [--rates 1000,2000,3000] [--seconds 15] [--reps 2] [--write bench/RESULTS.md]
    python bench/cluster.py --smoke      # 100 registrations per mode, fixed costs over 0.25 s, 0.5 s held: ~25 s

For every offered rate and repetition, both modes (order alternating between repetitions) run rate x seconds
digest registrations (REGISTER -> 401 -> REGISTER with credentials -> 200; no refresh; unregister at the end)
against a fresh Kamailio (peers/kamailio) on 127.0.0.1 (free ports for each run), after waiting (bounded) for a
quiet machine.
`--workers 2` is two local worker processes (pipes); `--cluster local:2` is a LocalCluster of two Dask worker
processes, one thread each, the same Worker code, snapshots as Dask events, start/stop through the scheduler.

Each run is a child process running `run_scenario` exactly as `sipload run --workers 2 [--cluster local:2]`
does, its progress lines read as they come.
Per run: achieved arrival rate, registrations not OK, register p99 (service time, and from the intended start),
wall time and CPU of the whole generator process tree from start to exit (Dask's start-up included), and the
steady-state CPU µs per registration (while 10-90 % of the registrations completed: start-up excluded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    REPO,
    SMOKE_HELP,
    CpuSampler,
    _wait4,
    kamailio,
    kill_group,
    machine,
    machine_line,
    say,
    sipload_scenario,
    smoke_peers,
    wait_quiet,
)

from sipload.testing.peers import free_ports_in_a_row

MODES = {"workers": "--workers 2", "cluster": "--cluster local:2"}
SECTION = "## Dask layer"


@dataclass(slots=True)
class Run:
    mode: str
    offered: float
    total: int
    ok: int = 0
    achieved: float = 0.0
    p99_ms: float = math.nan
    p99_intended_ms: float = math.nan
    wall_s: float = math.nan
    cpu_s: float = math.nan
    steady_us: float = math.nan
    quiet: str = ""
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        return (f"| {self.offered:>5.0f} | {MODES[self.mode]:<17} | {self.achieved:>7.0f} | {self.total - self.ok:>4} "
                f"| {self.p99_ms:>6.2f} ({self.p99_intended_ms:.1f}) | {self.wall_s:>5.1f} | {self.cpu_s:>5.2f} "
                f"| {self.steady_us:>6.1f} |")


HEAD = ("| offered/s | mode | achieved/s | not ok | register p99 ms (intended) | wall s | CPU s | "
        "steady CPU µs/reg |\n|---:|---|---:|---:|---:|---:|---:|---:|")


# --- the child: one run, as `sipload run` ---------------------------------------------------------------
def child(mode: str, scenario: Path, out: Path) -> None:
    import trio

    from sipload.engine import run as run_module
    from sipload.scenario import load_scenario

    sc = load_scenario(scenario)
    outcome = trio.run(lambda: run_module.run_scenario(sc, out, progress=lambda line: print(line, flush=True),
                                                       workers=2, cluster="local:2" if mode == "cluster" else None))
    print(f"exit {int(outcome.exit_code)}", flush=True)


def fixed(config: str, seconds: float) -> None:
    """What the Dask layer costs before any registration: starting a LocalCluster of 2 (as `--cluster local:2`
    does) and its CPU per second while idle for `seconds` (scheduler, nannies, workers, client: this process
    tree), after settling for up to 2 s."""
    from common import tree_cpu

    import sipload.engine.cluster as cluster

    if config == "default":
        cluster.QUIET_WORKERS = {}   # Dask's own defaults, for comparison
    t0 = time.monotonic()
    dask = cluster._Dask(cluster.ClusterAddress(None, 2))
    start_s = time.monotonic() - t0
    time.sleep(min(2.0, seconds))
    cpu0, w0 = tree_cpu(os.getpid()), time.monotonic()
    time.sleep(seconds)
    idle = (tree_cpu(os.getpid()) - cpu0) / (time.monotonic() - w0)
    t1 = time.monotonic()
    dask.close()
    print(json.dumps({"config": config, "start_s": start_s, "idle_cpu_ms_per_s": idle * 1000,
                      "close_s": time.monotonic() - t1}), flush=True)


def measure_fixed(args: argparse.Namespace) -> list[dict[str, float | str]]:
    out: list[dict[str, float | str]] = []
    for config in ("sipload", "default"):
        for _ in range(args.reps):
            wait_quiet(args.quiet_idle, args.quiet_wait)
            proc = subprocess.run([sys.executable, __file__, "--fixed", config, f"{args.idle:g}"], cwd=REPO,
                                  capture_output=True, text=True, timeout=120)
            line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
            if line:
                out.append(json.loads(line[-1]))
                say(f"  fixed costs ({config}): {line[-1]}")
            else:
                say(f"  fixed costs ({config}) failed: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    return out


# --- the parent ---------------------------------------------------------------------------------------
def one_run(mode: str, rate: float, seconds: float, args: argparse.Namespace, work: Path) -> Run:
    total = int(rate * seconds)
    run = Run(mode, rate, total)
    quiet = wait_quiet(args.quiet_idle, args.quiet_wait)
    run.quiet = quiet.text()
    workdir = work / f"{mode}-{rate:g}"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_ports_in_a_row(2)   # others run Kamailios too; a stopping one keeps its ports a while
    scenario = sipload_scenario(workdir / "bench.toml", name=f"dask-{mode}", target=f"sip:127.0.0.1:{port}",
                                rate=rate, total=total, duration=(total - 1) / rate + args.hold, unregister=True)
    out = workdir / "out"
    with kamailio(port, port + 1, work / "kamailio"):
        lines: list[str] = []
        registered = [0]
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, __file__, "--child", mode, str(scenario), str(out)], cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if "registered " in line:   # the most held so far: the unregistration does not count down
                    registered[0] = max(registered[0], int(line.split("registered ", 1)[1].split()[0]))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            with CpuSampler(proc.pid, lambda: registered[0]) as sampler:
                try:
                    _, _, usage = _wait4(proc, seconds * 4 + 90)
                    run.cpu_s = usage.ru_utime + usage.ru_stime
                except TimeoutError:
                    run.notes.append("killed: no end within the time limit")
        finally:
            kill_group(proc)
        run.wall_s = time.monotonic() - t0
        reader.join(5)
    run.steady_us = sampler.steady_us(total)
    path = out / "summary.json"
    if not path.exists():
        run.notes.append("no summary.json: " + " / ".join(lines[-5:]))
        return run
    summary = json.loads(path.read_text())
    run.ok = int(summary["registrations"]["succeeded"])
    run.achieved = float(summary.get("rate", {}).get("achieved") or 0.0)
    run.p99_ms = float(summary.get("service_ms", {}).get("register", {}).get("p99", math.nan))
    run.p99_intended_ms = float(summary.get("latency_ms", {}).get("register", {}).get("p99", math.nan))
    run.notes.extend(summary.get("notes", []))
    if int(summary["unregistrations"]["succeeded"]) != run.ok:
        run.notes.append(f"unregistered {summary['unregistrations']['succeeded']} of {run.ok}")
    return run


def med(values: list[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return statistics.median(good) if good else math.nan


def report(runs: list[Run], rates: list[float], args: argparse.Namespace, mach: dict[str, str],
           fixed_costs: list[dict[str, float | str]]) -> str:
    lines = [SECTION, "",
             f"`python bench/cluster.py --rates {','.join(f'{r:g}' for r in rates)} --seconds {args.seconds:g} "
             f"--reps {args.reps}`: the same scenario with `--workers 2` and with `--cluster local:2` (a LocalCluster "
             f"of 2 Dask worker processes, 1 thread each), digest registrations then unregistration, against a fresh "
             f"Kamailio per run on 127.0.0.1, rate x {args.seconds:g} s registrations per run. CPU: the whole "
             f"generator process tree (client, worker processes, Dask scheduler and nannies), start to exit; steady: "
             f"CPU µs per registration while 10-90 % of them completed (start-up excluded).", "",
             f"Machine: {machine_line(mach)}; load before: {mach['loadavg']}.", ""]
    lines += ["Fixed costs of `--cluster local:2` (medians of the repetitions; a LocalCluster of 2 started as sipload "
              f"starts it, then {args.idle:g} s idle): start-up wall time, and CPU of the idle Dask machinery "
              "(scheduler, 2 nannies, 2 workers, client) per second of run time, with sipload's quieter worker "
              "settings (`QUIET_WORKERS`: no statistical profiler, 200 ms tick) and with Dask's defaults.", "",
              "| worker settings | start-up s | idle CPU ms per s | close s |", "|---|---:|---:|---:|"]
    for config in ("sipload", "default"):
        rows = [f for f in fixed_costs if f["config"] == config]
        if rows:
            lines.append(f"| {config} | {med([float(f['start_s']) for f in rows]):.2f} "
                         f"| {med([float(f['idle_cpu_ms_per_s']) for f in rows]):.0f} "
                         f"| {med([float(f['close_s']) for f in rows]):.2f} |")
    lines += ["", "Each run (in order):", "", HEAD]
    lines += [r.row() for r in runs]
    lines += ["", "Medians over the repetitions (cluster minus workers):", "",
              "| offered/s | achieved/s workers / cluster | steady µs/reg workers / cluster (Δ) "
              "| wall s workers / cluster (Δ) | CPU s workers / cluster (Δ) |",
              "|---:|---:|---:|---:|---:|"]
    for rate in rates:
        w = [r for r in runs if r.offered == rate and r.mode == "workers"]
        c = [r for r in runs if r.offered == rate and r.mode == "cluster"]
        aw, ac = med([r.achieved for r in w]), med([r.achieved for r in c])
        sw, sc = med([r.steady_us for r in w]), med([r.steady_us for r in c])
        ww, wc = med([r.wall_s for r in w]), med([r.wall_s for r in c])
        cw, cc = med([r.cpu_s for r in w]), med([r.cpu_s for r in c])
        lines.append(f"| {rate:g} | {aw:.0f} / {ac:.0f} | {sw:.1f} / {sc:.1f} ({sc - sw:+.1f}) "
                     f"| {ww:.1f} / {wc:.1f} ({wc - ww:+.1f}) | {cw:.2f} / {cc:.2f} ({cc - cw:+.2f}) |")
    notes = [f"- {MODES[r.mode]} at {r.offered:g}/s: {'; '.join(r.notes)}" for r in runs if r.notes]
    noisy = [r for r in runs if not r.quiet.startswith("quiet")]
    if noisy:
        notes.append(f"- {len(noisy)} of {len(runs)} runs started on a machine that was not quiet "
                     f"(other jobs running): read the steady figures with that in mind.")
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Append (or replace) only this section; the file is re-read right before writing."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start = old.find(SECTION + "\n")
    if start >= 0:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[end + 1:] if end >= 0 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--fixed":
        fixed(sys.argv[2], float(sys.argv[3]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,2000,3000")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle LocalCluster for its fixed costs")
    ap.add_argument("--hold", type=float, default=2.0,
                    help="seconds the bindings are held after the last arrival, before the unregistration")
    ap.add_argument("--quiet-idle", type=float, default=0.9)
    ap.add_argument("--quiet-wait", type=float, default=120.0)
    ap.add_argument("--write", type=Path)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.rates, args.seconds, args.reps, args.idle, args.hold, args.quiet_wait = "100", 1.0, 1, 0.25, 0.5, 0.0
        if not smoke_peers("cluster", "kamailio"):
            return
    rates = [float(r) for r in args.rates.split(",")]
    mach = machine()
    say(machine_line(mach))
    fixed_costs = measure_fixed(args)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="sipload-bench-dask-") as tmp:
        for rate in rates:
            for rep in range(args.reps):
                order = ["workers", "cluster"] if rep % 2 == 0 else ["cluster", "workers"]
                for mode in order:
                    r = one_run(mode, rate, args.seconds, args, Path(tmp))
                    say(r.row() + (f"  {r.quiet}" if r.quiet else "") + (f"  notes: {r.notes}" if r.notes else ""))
                    runs.append(r)
    text = report(runs, rates, args, mach, fixed_costs)
    say("\n" + text)
    if args.write is not None:
        write_section(args.write, text)
        say(f"written: {args.write} ({SECTION})")


if __name__ == "__main__":
    main()
