"""What the benchmarks share: a quiet machine, CPU of process trees, Kamailio, SIPp and sipload runs
(Kamailio, SIPp's scenario and users, and free ports come from sipload/testing/peers.py, as in the tests).

Every target is 127.0.0.1. Every run is bounded (count and time) and whatever a benchmark starts is
stopped on the way out: Kamailio through peers/kamailio/stop, subprocesses by their process group.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's sipload, whatever is installed

from sipload.testing.peers import (
    SIPP_STAT,
    KamailioPeer,
    PeerError,
    have,
    in_ci,
    parse_sipp_stats,
    prepare_sipp,
    start_kamailio,
    stop_kamailio,
)

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
CLEAN_P99_MS = 20.0
CLEAN_ACHIEVED = 0.97   # a run that achieved less than 97 % of the offered rate fell behind: not clean


def say(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------------------ smoke
SMOKE_HELP = ("a few seconds with tiny counts on loopback, to show that the script still runs "
              "(tests/test_bench_smoke.py runs it): its figures measure nothing")


def smoke_peers(part: str, *programs: str) -> bool:
    """Whether the peers `part` of a --smoke run needs are installed; a part without them is skipped with a
    line saying so, except under CI=true, where a missing peer ends the run (exit 2)."""
    missing = [p for p in programs if not have(p)]
    if not missing:
        return True
    text = f"{part}: {', '.join(missing)} not installed (peers/install)"
    if in_ci():
        say(f"smoke: cannot run {text}; CI=true: a missing peer is an error")
        raise SystemExit(2)
    say(f"smoke: skipped {text}")
    return False


# ------------------------------------------------------------------------------------------ machine
def machine() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"

    def version(cmd: list[str], pattern: str) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        m = re.search(pattern, out)
        return m.group(1) if m else "?"

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sipp": version(["sipp", "-v"], r"v(\d[\w.\-]*)"),
        "kamailio": version(["kamailio", "-v"], r"version: kamailio (\S+)"),
        "loadavg": Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__(),
    }


def machine_line(m: dict[str, str]) -> str:
    return (f"{m['date']}; nproc {m['nproc']}; {m['cpu']}; {m['memory']}; kernel {m['kernel']}; "
            f"Python {m['python']}; SIPp {m['sipp']}; Kamailio {m['kamailio']}")


def _cpu_times() -> tuple[float, float]:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [float(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return idle, sum(values[:8])


def idle_share(seconds: float = 1.0) -> float:
    """Share of all CPUs idle over `seconds` (1.0: nothing else runs)."""
    i0, t0 = _cpu_times()
    time.sleep(seconds)
    i1, t1 = _cpu_times()
    return (i1 - i0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass(frozen=True, slots=True)
class Quiet:
    quiet: bool
    idle: float       # share idle in the last sample
    waited: float     # seconds waited
    loadavg: str

    def text(self) -> str:
        state = "quiet" if self.quiet else "NOT QUIET"
        return f"{state} (idle {self.idle:.0%}, load {self.loadavg}, waited {self.waited:.0f} s)"


def wait_quiet(min_idle: float = 0.9, max_wait: float = 120.0, log: Callable[[str], None] = say) -> Quiet:
    """Wait (bounded) until two 1-second samples in a row show >= min_idle of the CPUs idle; with max_wait <= 0
    (--smoke), one quarter-second sample tells, without waiting."""
    if max_wait <= 0:
        idle = idle_share(0.25)
        return Quiet(idle >= min_idle, idle, 0.0, " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    start = time.monotonic()
    good = 0
    idle = 0.0
    told = False
    while True:
        idle = idle_share(1.0)
        good = good + 1 if idle >= min_idle else 0
        waited = time.monotonic() - start
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        if good >= 2:
            return Quiet(True, idle, waited, load)
        if waited >= max_wait:
            log(f"  machine not quiet after {waited:.0f} s (idle {idle:.0%}, load {load}): measuring anyway")
            return Quiet(False, idle, waited, load)
        if not told and waited > 3:
            log(f"  waiting for a quiet machine (idle {idle:.0%}, load {load}) ...")
            told = True


# ------------------------------------------------------------------------------------- process trees
def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own cpu s, waited-for children cpu s) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    own = (int(fields[11]) + int(fields[12])) / TICK
    children = (int(fields[13]) + int(fields[14])) / TICK
    return ppid, own, children


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parents.setdefault(st[0], []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for child in parents.get(p, []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and every descendant, alive or exited and reaped."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        st = _stat(p)
        if st is not None:
            total += st[1] + st[2]
    return total


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """Stop a subprocess started with start_new_session=True, and everything in its group."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


# ------------------------------------------------------------------------------------------ Kamailio
class Kamailio:
    """A Kamailio (sipload/testing/peers.py: peers/kamailio/start) and the CPU of its process tree."""

    def __init__(self, peer: KamailioPeer) -> None:
        self.peer = peer
        self.port = peer.port
        self.pid = peer.pid

    def cpu(self) -> float:
        return tree_cpu(self.pid)

    def pin(self, cpus: str) -> None:
        """Pin Kamailio (main and children) to these CPUs (taskset list, e.g. "1")."""
        for pid in [self.pid, *descendants(self.pid)]:
            subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, timeout=10)


@contextlib.contextmanager
def kamailio(port: int, rpc_port: int, rundir: Path) -> Iterator[Kamailio]:
    """A fresh Kamailio on these ports and run dir, stopped (peers/kamailio/stop) on the way out."""
    try:
        yield Kamailio(start_kamailio(rundir, port, rpc_port))
    finally:
        stop_kamailio(rundir)


# ------------------------------------------------------------------------------------------ results
@dataclass(slots=True)
class RunResult:
    tool: str
    target: str
    offered: float
    total: int
    ok: int = 0
    failed: int = 0
    retrans: int = 0
    achieved: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    p99_intended_ms: float = math.nan  # sipload: from the intended start (includes its schedule lag)
    cpu_s: float = 0.0                 # whole generator process tree, start to exit
    steady_us: float = math.nan        # generator CPU per registration while registrations flowed
    target_cpu_s: float = math.nan     # the registrar's CPU over the run (Kamailio)
    quiet: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (self.ok == self.total and self.failed == 0 and self.retrans == 0
                and self.p99_ms <= CLEAN_P99_MS and self.achieved >= CLEAN_ACHIEVED * self.offered)

    def row(self) -> str:
        per_1000 = self.cpu_s / self.ok * 1000 if self.ok else math.nan
        intended = "" if math.isnan(self.p99_intended_ms) else f" ({self.p99_intended_ms:.1f})"
        target = "" if math.isnan(self.target_cpu_s) or not self.ok else \
            f"{self.target_cpu_s / self.ok * 1e6:6.1f}"
        return (f"| {self.offered:>6.0f} | {self.tool:<8} | {self.achieved:>8.0f} | {self.total - self.ok:>5}"
                f" | {self.retrans:>6} | {self.p50_ms:>6.2f} | {self.p99_ms:>6.2f}{intended:<9}"
                f" | {per_1000:>6.3f} | {self.steady_us:>6.1f} | {target:>6} | {'yes' if self.clean else 'no':<5} |")


TABLE_HEAD = (
    "| offered/s | tool | achieved/s | not ok | retrans | p50 ms | p99 ms (intended) | CPU s/1000 | "
    "steady µs/reg | registrar µs/reg | clean |\n"
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


class CpuSampler:
    """Samples (time, tree CPU, progress count) of a process tree every `period` s, in a thread."""

    def __init__(self, pid: int, progress: Callable[[], int], period: float = 0.25) -> None:
        self.pid = pid
        self.progress = progress
        self.period = period
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        done = 0
        while not self._stop.is_set():
            done = max(done, self.progress())  # a gauge summed over workers may dip for an interval
            self.samples.append((time.monotonic(), tree_cpu(self.pid), done))
            self._stop.wait(self.period)

    def steady_us(self, total: int, low: float = 0.1, high: float = 0.9) -> float:
        """CPU µs per completed registration between `low` and `high` of the total completed."""
        inside = [s for s in self.samples if low * total <= s[2] <= high * total]
        if len(inside) < 2 or inside[-1][2] <= inside[0][2]:
            return math.nan
        return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2]) * 1e6


# ------------------------------------------------------------------------------------------- SIPp
def run_sipp(host: str, port: int, rate: float, total: int, workdir: Path, *, local_port: int,
             timeout: float, first_user: int = 1) -> RunResult:
    """SIPp with the project's digest scenario (sipload/testing/peers.py: the reference one with Expires
    3600) at `rate`/s for `total` registrations, its CPU sampled and its round trips read (-trace_rtt)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    cmd = prepare_sipp(workdir, f"{host}:{port}", range(first_user, first_user + total), rate, total,
                       "-trace_rtt", "-rtt_freq", str(min(1000, total)), local_port=local_port, timeout=timeout)
    result = RunResult("SIPp", f"{host}:{port}", rate, total)
    stat = workdir / SIPP_STAT

    def progress() -> int:
        try:
            return int(parse_sipp_stats(stat)["SuccessfulCall(C)"])
        except (OSError, PeerError, KeyError, ValueError):
            return 0

    with (workdir / "sipp.out").open("w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            with CpuSampler(proc.pid, progress) as sampler:
                try:
                    _, _, usage = _wait4(proc, timeout + 15)
                except TimeoutError:
                    result.notes.append(f"killed after {timeout + 15:.0f} s")
                    usage = None
        finally:
            kill_group(proc)
    result.cpu_s = (usage.ru_utime + usage.ru_stime) if usage is not None else math.nan
    result.steady_us = sampler.steady_us(total)
    if proc.returncode not in (0, 1):
        result.notes.append(f"sipp exit {proc.returncode}: {(workdir / 'sipp.out').read_text()[-500:]}")
    try:
        last = parse_sipp_stats(stat)
        result.ok = int(last["SuccessfulCall(C)"])
        result.failed = int(last["FailedCall(C)"])
        result.retrans = int(last["Retransmissions(C)"])
    except (OSError, PeerError, KeyError, ValueError) as exc:
        result.notes.append(f"no SIPp statistics: {exc}")
    rtts: list[float] = []
    done: list[float] = []
    for rtt_file in workdir.glob("*_rtt.csv"):
        for line in rtt_file.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3 and parts[2].strip() == "1":
                done.append(float(parts[0]))
                rtts.append(float(parts[1]))
    rtts.sort()
    result.p50_ms = percentile(rtts, 50)
    result.p99_ms = percentile(rtts, 99)
    if len(done) > 1 and max(done) > min(done):
        result.achieved = (len(done) - 1) / ((max(done) - min(done)) / 1000.0)
    return result


# ------------------------------------------------------------------------------------------ sipload
SCENARIO = """\
name = "{name}"
description = "bench: {total} digest registrations at {rate}/s, no refresh, no unregister"
thresholds = []

[target]
registrar = "{target}"
domain = "127.0.0.1"
transport = "udp"

[endpoints]
count = {total}
first = {first}
username = "user{{n}}"
password = "pw-user{{n}}"
expires = {expires}
refresh_at = 0.5
refresh_jitter = {jitter}

[load]
rate = {rate}
max_in_flight = {max_in_flight}
duration = "{duration}s"
unregister = {unregister}
unregister_timeout = "{unregister_timeout}s"
interval = "1s"
{tick}
[timers]
t1 = "500ms"
max_retries = 0
"""

_PROGRESS = re.compile(r"registered (\d+)")


def sipload_scenario(path: Path, *, name: str, target: str, rate: float, total: int, duration: float,
                     expires: int = 3600, first: int = 1, unregister: bool = False, jitter: float = 0.0,
                     unregister_timeout: float = 10.0, max_in_flight: int = 2000,
                     tick: float | None = None) -> Path:
    """A scenario for the benchmarks. max_in_flight (per worker) never binds while the generator keeps
    up (in flight ~ rate x latency: 20 at 20k/s and 1 ms); when it falls behind, it holds arrivals
    back (measured as schedule lag) instead of letting answers overflow the socket buffers. tick: the
    scheduler's load.tick in seconds (None: the default)."""
    path.write_text(SCENARIO.format(
        name=name, target=target, rate=f"{rate:g}", total=total, duration=f"{duration:g}", first=first,
        expires=expires, unregister="true" if unregister else "false", jitter=jitter,
        max_in_flight=max_in_flight, unregister_timeout=f"{unregister_timeout:g}",
        tick="" if tick is None else f'tick = "{tick * 1e3:g}ms"\n'))
    return path


@dataclass(slots=True)
class SiploadRun:
    proc: subprocess.Popen[str]
    lines: list[str]
    registered: int = 0


def start_sipload(scenario: Path, out: Path, workers: int | None,
                  on_line: Callable[[str], None] | None = None, repo: Path = REPO,
                  engine: str | None = None) -> SiploadRun:
    """`sipload run` from the checkout `repo` (default: this one; another for before/after comparisons);
    `engine`: its --engine (None: the checkout's default)."""
    cmd = [sys.executable, "-m", "sipload", "run", str(scenario), "--out", str(out)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if engine is not None:
        cmd += ["--engine", engine]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    run = SiploadRun(proc, [])

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            run.lines.append(line.rstrip())
            m = _PROGRESS.search(line)
            if m:
                run.registered = int(m.group(1))
            if on_line is not None:
                on_line(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    return run


def run_sipload(target: str, rate: float, total: int, workdir: Path, *, timeout: float,
                workers: int | None = None, first_user: int = 1, repo: Path = REPO,
                tool: str | None = None, engine: str | None = None, tick: float | None = None) -> RunResult:
    """sipload (from `repo`, on `engine`, with `load.tick` = `tick` seconds, None: its default) at `rate`/s
    for `total` registrations (as SIPp: no refresh, no unregister)."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    duration = (total - 1) / rate + 2.0   # every arrival, and 2 s for the last answers
    scenario = sipload_scenario(workdir / "bench.toml", name="vs-sipp", target=target, rate=rate, total=total,
                                duration=duration, first=first_user, tick=tick)
    name = tool or ("sipload" if workers is None else f"sipload/{workers}w") + (f" {engine}" if engine else "")
    result = RunResult(name, target, rate, total)
    run = start_sipload(scenario, workdir / "out", workers, repo=repo, engine=engine)
    try:
        with CpuSampler(run.proc.pid, lambda: run.registered) as sampler:
            try:
                _, _, usage = _wait4(run.proc, timeout)
            except TimeoutError:
                result.notes.append(f"killed after {timeout:.0f} s")
                kill_group(run.proc)
                usage = None
    finally:
        kill_group(run.proc)
    result.cpu_s = (usage.ru_utime + usage.ru_stime) if usage is not None else math.nan
    result.steady_us = sampler.steady_us(total)
    summary_path = workdir / "out" / "summary.json"
    if not summary_path.exists():
        result.notes.append("no summary.json: " + " / ".join(run.lines[-5:]))
        return result
    summary = json.loads(summary_path.read_text())
    regs = summary["registrations"]
    result.ok = int(regs["succeeded"])
    result.failed = int(regs["failed"])
    result.retrans = int(summary.get("retransmissions", 0))
    result.achieved = float(summary.get("rate", {}).get("achieved") or 0.0)
    service = summary.get("service_ms", {}).get("register", {})
    intended = summary.get("latency_ms", {}).get("register", {})
    result.p50_ms = float(service.get("p50", math.nan))
    result.p99_ms = float(service.get("p99", math.nan))
    result.p99_intended_ms = float(intended.get("p99", math.nan))
    drops = summary.get("kernel_drops", 0)
    if drops:
        result.notes.append(f"{drops} kernel drops on the generator's sockets")
    return result


def _wait4(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, int, resource.struct_rusage]:
    """os.wait4 with a deadline (polling WNOHANG): the child's own rusage, children included."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, status, usage
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.05)
